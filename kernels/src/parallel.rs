//! Threading policy for kernels. A session with more than one thread registers
//! its rayon pool for the calling thread ([`with_pool`]); the session itself runs
//! on the caller, and only a kernel with enough work to pay for waking other
//! threads enters the pool. Called from inside a pool, kernels split work across
//! it; with no pool they run serially, so one thread is the plain, overhead-free
//! case. Splits use `rayon::join` (no heap allocation).

use rayon::ThreadPool;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

thread_local! {
    static POOL: RefCell<Option<Arc<ThreadPool>>> = const { RefCell::new(None) };
    /// Set by [`serial`]: kernels called on this thread use one thread.
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every kernel it calls on this thread kept to this thread: for
/// kernels that already run as one of many parallel tasks (an attention tile calling
/// small GEMMs), where splitting again would only add overhead.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    let previous = SERIAL.replace(true);
    let r = f();
    SERIAL.set(previous);
    r
}

/// Runs `f` with `pool` available to the kernels it calls on this thread.
pub fn with_pool<R>(pool: Option<&Arc<ThreadPool>>, f: impl FnOnce() -> R) -> R {
    let previous = POOL.with_borrow_mut(|p| std::mem::replace(p, pool.cloned()));
    let r = f();
    POOL.with_borrow_mut(|p| *p = previous);
    r
}

/// Threads the calling kernel may use.
pub fn threads() -> usize {
    if SERIAL.get() {
        1
    } else if rayon::current_thread_index().is_some() {
        rayon::current_num_threads()
    } else {
        POOL.with_borrow(|p| p.as_ref().map_or(1, |p| p.current_num_threads()))
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
    if SERIAL.get() {
        (0..n).for_each(f);
        return;
    }
    if rayon::current_thread_index().is_some() {
        if rayon::current_num_threads() > 1 {
            go(0, n, f);
        } else {
            (0..n).for_each(f);
        }
        return;
    }
    match POOL.with_borrow(|p| p.clone()) {
        Some(pool) if pool.current_num_threads() > 1 => pool.install(|| go(0, n, f)),
        _ => (0..n).for_each(f),
    }
}

/// Calls `f(i, chunk)` for the `i`-th `chunk`-long piece of `data` (the last may be
/// shorter), in parallel like [`for_each_index`]: disjoint outputs without `unsafe`.
pub fn for_each_chunk_mut<T: Send>(data: &mut [T], chunk: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    fn go<T: Send>(first: usize, data: &mut [T], chunk: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        let n = data.len().div_ceil(chunk);
        if n <= 1 {
            if !data.is_empty() {
                f(first, data);
            }
        } else {
            let (lo, hi) = data.split_at_mut(n / 2 * chunk);
            rayon::join(|| go(first, lo, chunk, f), || go(first + n / 2, hi, chunk, f));
        }
    }
    let chunk = chunk.max(1);
    if threads() > 1 && data.len() > chunk {
        if rayon::current_thread_index().is_some() {
            return go(0, data, chunk, f);
        }
        if let Some(pool) = POOL.with_borrow(|p| p.clone()) {
            return pool.install(|| go(0, data, chunk, f));
        }
    }
    data.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
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
    fn chunks_are_visited_once_in_parallel_and_under_serial() {
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap());
        for len in [0, 1, 5, 16, 17, 100] {
            for chunk in [1, 4, 7] {
                let run = || {
                    let mut v = vec![usize::MAX; len];
                    for_each_chunk_mut(&mut v, chunk, &|i, c| c.iter_mut().for_each(|x| *x = i));
                    v
                };
                let want: Vec<usize> = (0..len).map(|j| j / chunk).collect();
                assert_eq!(with_pool(Some(&pool), run), want);
                assert_eq!(with_pool(Some(&pool), || serial(run)), want);
                assert_eq!(run(), want);
            }
        }
        assert_eq!(with_pool(Some(&pool), || serial(threads)), 1);
    }

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
        let pool = Arc::new(pool);
        with_pool(Some(&pool), || {
            assert_eq!(threads(), 3);
            for_each_index(37, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            })
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 3));
        assert_eq!(threads(), 1);
    }
}
