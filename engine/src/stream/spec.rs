//! [`StreamSpec`]: how a model is to be streamed, as users write it
//! (`--stream T`, `--stream windowed:N`, `--stream windowed:N@T`).

use super::rewrite::StreamOptions;
use super::session::StreamMode;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::shape::Dim;
use std::fmt;

/// A time axis (None: the model's only symbolic input dim) and a mode.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    pub symbol: Option<String>,
    pub mode: StreamMode,
}

impl std::str::FromStr for StreamSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (mode, symbol) = match s.split_once('@') {
            Some((m, sym)) => (m, Some(sym)),
            None if s.starts_with("windowed:") || s == "stateful" => (s, None),
            None => ("stateful", Some(s)),
        };
        if symbol.is_some_and(|s| s.is_empty() || s.contains(':')) {
            return Err(format!("'{s}': expected T, windowed:N or windowed:N@T"));
        }
        Ok(StreamSpec { symbol: symbol.map(str::to_string), mode: mode.parse()? })
    }
}

impl fmt::Display for StreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sym = self.symbol.as_deref().unwrap_or("?");
        match &self.mode {
            StreamMode::Stateful(_) => f.write_str(sym),
            StreamMode::Windowed(n) => write!(f, "windowed:{n}@{sym}"),
        }
    }
}

impl StreamSpec {
    /// Stateful streaming along `symbol`.
    pub fn stateful(symbol: &str, options: StreamOptions) -> StreamSpec {
        StreamSpec { symbol: Some(symbol.to_string()), mode: StreamMode::Stateful(options) }
    }

    /// The time symbol: the one given, or the only symbolic dim of the inputs.
    pub fn resolve(&self, g: &Graph) -> Result<String> {
        if let Some(s) = &self.symbol {
            return Ok(s.clone());
        }
        let mut syms: Vec<String> = Vec::new();
        for &i in &g.inputs {
            for d in g.values[i].fact.shape.iter().flat_map(|s| s.0.iter()) {
                if let Dim::Sym(s) = d {
                    if !syms.contains(s) {
                        syms.push(s.clone());
                    }
                }
            }
        }
        match syms.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::Invalid("no input has a symbolic dim to stream along".into())),
            many => Err(Error::Invalid(format!(
                "the inputs have several symbolic dims ({}); name the time axis, e.g. --stream {}",
                many.join(", "),
                many[0]
            ))),
        }
    }

    /// This spec with the symbol resolved against `g`.
    pub fn resolved(&self, g: &Graph) -> Result<StreamSpec> {
        Ok(StreamSpec { symbol: Some(self.resolve(g)?), mode: self.mode.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for (s, want) in [("T", "T"), ("windowed:8", "windowed:8@?"), ("windowed:8@S", "windowed:8@S")] {
            assert_eq!(s.parse::<StreamSpec>().unwrap().to_string(), want);
        }
        assert!("windowed:x".parse::<StreamSpec>().is_err());
        assert!("windowed:4@".parse::<StreamSpec>().is_err());
    }
}
