//! Threading policy for kernels. A kernel splits its work across threads only
//! when it runs inside a rayon pool (a `Session` with more than one thread
//! installs one); called from any other thread it runs serially, so one thread is
//! the plain, overhead-free case. Splits use `rayon::join` (no heap allocation).

/// Threads the calling kernel may use.
pub fn threads() -> usize {
    if rayon::current_thread_index().is_some() {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// Calls `f(i)` for every `i < n`, in parallel when [`threads`] allows.
pub fn for_each_index(n: usize, f: &(dyn Fn(usize) + Sync)) {
    fn go(lo: usize, hi: usize, f: &(dyn Fn(usize) + Sync)) {
        if hi - lo == 1 {
            f(lo);
        } else {
            let mid = lo + (hi - lo) / 2;
            rayon::join(|| go(lo, mid, f), || go(mid, hi, f));
        }
    }
    if n == 0 {
        return;
    }
    if threads() <= 1 {
        (0..n).for_each(f);
    } else {
        go(0, n, f);
    }
}

/// Splits `0..len` into `parts` near-equal ranges whose boundaries are multiples
/// of `align` (the last range takes the remainder); returns range `i`.
pub fn split_range(len: usize, parts: usize, align: usize, i: usize) -> std::ops::Range<usize> {
    let units = len.div_ceil(align.max(1));
    let per = units / parts.max(1);
    let extra = units % parts.max(1);
    let start = (i * per + i.min(extra)) * align;
    let end = ((i + 1) * per + (i + 1).min(extra)) * align;
    start.min(len)..end.min(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_range_covers_everything_once_on_aligned_boundaries() {
        for len in [0, 1, 7, 12, 100, 1001] {
            for parts in 1..6 {
                for align in [1, 4, 12] {
                    let mut next = 0;
                    for i in 0..parts {
                        let r = split_range(len, parts, align, i);
                        assert_eq!(r.start, next, "len {len} parts {parts} align {align}");
                        assert!(r.start.is_multiple_of(align) || r.start == len);
                        next = r.end;
                    }
                    assert_eq!(next, len);
                }
            }
        }
    }

    #[test]
    fn for_each_index_visits_each_index_once_in_and_out_of_a_pool() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        for_each_index(37, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("pool");
        pool.install(|| {
            assert_eq!(threads(), 3);
            for_each_index(37, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            })
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 2));
        assert_eq!(threads(), 1);
    }
}
