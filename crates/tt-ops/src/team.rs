//! A team of spinning threads for a burst of short parallel loops, such as one decode step.
//!
//! A decode step is a few hundred parallel loops of 0.05-3 ms each (one per matmul, one per
//! device pass). Rayon parks a worker that finds no work after a short spin, and the thread that
//! next hands it work waits for it to wake up: about 40 us under this machine's hypervisor, so
//! roughly 50 us per loop (measured: one GEMV split into five calls over row ranges cost 51-61 us
//! per extra call). [`with_team`] runs a closure on one rayon worker while every other worker of the
//! pool spins, ready for the closure's loops; [`for_each`], [`map`] and [`map_mut`] hand their
//! items to that team (claimed one at a time, so uneven items balance) and fall back to rayon
//! outside one. Other rayon calls inside a team still work, on the calling thread alone.
//!
//! A loop started from inside another loop's item runs serially on its thread, as rayon's nested
//! loops would when every core is busy. Setting `TT_OPS_NO_TEAM` (to anything) turns teams off, so
//! the same run can be timed both ways.

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

/// One loop's body, borrowed for the duration of the loop.
type Body<'a> = dyn Fn(usize) + Sync + 'a;

/// The state the leader and its helpers share.
struct Team {
    /// Bumped by the leader to publish a loop; helpers watch it.
    epoch: AtomicU64,
    /// The loop body of the current epoch: a thin pointer to a `&Body` on the leader's stack
    /// (in [`Team::run`]), type-erased; null outside a loop.
    body: AtomicPtr<()>,
    /// `epoch << 32 | next unclaimed index`: a claim only succeeds for the current epoch.
    next: AtomicU64,
    /// Items of the current epoch (indices below it are claimed).
    len: AtomicUsize,
    /// Items of the current epoch finished, by anyone.
    done: AtomicUsize,
    /// Set when the leader's closure returned: helpers leave.
    stop: AtomicBool,
    /// The panic of an item that failed on a helper, for the leader to resume.
    helper_panic: Mutex<Option<Box<dyn Any + Send>>>,
}

thread_local! {
    /// The team this thread leads, if any.
    static LEADS: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
    /// Whether this thread is running a loop item (a nested loop then runs serially).
    static IN_ITEM: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the pool's other workers spinning, ready to share the loops `f` starts through
/// [`for_each`], [`map`] and [`map_mut`]. They spin until `f` returns, so keep `f` to a burst of parallel
/// work. With a single-thread pool, or inside a team already, this is just `f()`.
pub fn with_team<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    if helpers == 0 || leading().is_some() || IN_ITEM.get() || disabled() {
        return f();
    }
    let team = Team {
        epoch: AtomicU64::new(0),
        body: AtomicPtr::new(std::ptr::null_mut()),
        next: AtomicU64::new(0),
        len: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        helper_panic: Mutex::new(None),
    };
    rayon::scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| team.help());
        }
        // Helpers not yet started when `f` returns see `stop` and leave at once.
        let _stop = StopOnDrop(&team.stop);
        let previous = LEADS.replace(&team);
        let _restore = RestoreLeads(previous);
        f()
    })
}

/// Calls `f(i)` for every `i in 0..n`, in parallel: on the team when called by its leader,
/// serially inside another loop's item, and with rayon otherwise.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    if n == 0 {
        return;
    }
    if n == 1 || IN_ITEM.get() {
        (0..n).for_each(f);
        return;
    }
    match leading() {
        Some(team) => team.run(n, &f),
        None => (0..n).into_par_iter().for_each(&f),
    }
}

/// Whether a loop started on this thread now runs on it alone: inside another loop's item (one
/// device of a mesh), or with a one-thread pool. Callers that split work only to share it (a
/// matmul's column blocks) then keep it whole.
pub fn serial_here() -> bool {
    IN_ITEM.get() || rayon::current_num_threads() == 1
}

/// `(0..n).map(f)` collected in order, computed as [`for_each`] would.
pub fn map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let slots: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    for_each(n, |i| {
        let value = f(i);
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    });
    // `for_each` ran every item (or panicked, and this is not reached): no slot is empty.
    slots
        .into_iter()
        .filter_map(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// `f(i, &mut items[i])` for every item, collected in order, computed as [`for_each`] would: a
/// parallel pass that owns one element of `items` per index (a device's cache, an output chunk).
pub fn map_mut<T: Send, R: Send>(items: &mut [T], f: impl Fn(usize, &mut T) -> R + Sync) -> Vec<R> {
    let cells: Vec<Mutex<&mut T>> = items.iter_mut().map(Mutex::new).collect();
    map(cells.len(), |i| {
        let mut item = cells[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i, &mut item)
    })
}

/// Values per chunk of [`for_each_chunk_mut`].
pub const CHUNK: usize = 1 << 15;

/// `f(offset, chunk)` over `values` in chunks of [`CHUNK`] (the last may be shorter), as a
/// [`for_each`] loop when there are four chunks or more, else `f(0, values)` on this thread. For
/// elementwise work on prefill-sized tensors: on a one-device mesh nothing else runs beside the
/// op, while inside a mesh's per-device loop the chunks run on the device's own thread.
pub fn for_each_chunk_mut(values: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    if values.len() < 4 * CHUNK {
        f(0, values);
        return;
    }
    let mut chunks: Vec<&mut [f32]> = values.chunks_mut(CHUNK).collect();
    map_mut(&mut chunks, |c, chunk| f(c * CHUNK, chunk));
}

/// The team this thread leads and may hand a loop to.
fn leading() -> Option<&'static Team> {
    let team = LEADS.get();
    // SAFETY: `LEADS` points at a team only while `with_team` (which owns it and outlives every
    // use on this thread) runs on this thread; it is reset before the team is dropped.
    (!team.is_null()).then(|| unsafe { &*team })
}

impl Team {
    /// The leader's side of one loop: publish it, work on it, wait for the items others took.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(
            n < 0xffff_ffff,
            "a team loop takes fewer than 2^32 - 1 items"
        );
        let epoch = self.epoch.load(SeqCst) + 1;
        // The fat reference stays here, in this frame; helpers get a thin pointer to it and read
        // it back as the same type (see `help`), so no layout of `&dyn` is assumed. It is not
        // moved or dropped before this call returns, which is after every claimed item is done.
        let body: &Body<'_> = f;
        self.body
            .store(std::ptr::from_ref(&body).cast_mut().cast::<()>(), SeqCst);
        self.len.store(n, SeqCst);
        self.done.store(0, SeqCst);
        self.next.store(epoch << 32, SeqCst);
        self.epoch.store(epoch, SeqCst);
        let mine = self.work(epoch, n, f);
        // Close the loop (a panic may have left items unclaimed) and wait for the claimed ones.
        let claimed = self.close(epoch, n);
        let mut spins = Spin::default();
        while self.done.load(SeqCst) < claimed {
            spins.pause();
        }
        // No helper can read it any more: claims are closed and the claimed items are done.
        self.body.store(std::ptr::null_mut(), SeqCst);
        if let Err(payload) = mine {
            panic::resume_unwind(payload);
        }
        let helper_panic = self.helper_panic.lock().map(|mut p| p.take());
        if let Ok(Some(payload)) = helper_panic {
            panic::resume_unwind(payload);
        }
    }

    /// Claims and runs items of `epoch` until none is left, or until one panics (an item that
    /// panicked still counts as done, so that `run` does not wait for it).
    fn work(
        &self,
        epoch: u64,
        n: usize,
        f: &(dyn Fn(usize) + Sync),
    ) -> Result<(), Box<dyn Any + Send>> {
        let _item = InItem::enter();
        while let Some(i) = self.claim(epoch, n) {
            let ran = panic::catch_unwind(AssertUnwindSafe(|| f(i)));
            self.done.fetch_add(1, SeqCst);
            ran?;
        }
        Ok(())
    }

    /// The next unclaimed index of `epoch`, if the loop is still that epoch and has one.
    fn claim(&self, epoch: u64, n: usize) -> Option<usize> {
        let mut current = self.next.load(SeqCst);
        loop {
            let index = (current & 0xffff_ffff) as usize;
            if current >> 32 != epoch || index >= n {
                return None;
            }
            match self
                .next
                .compare_exchange(current, current + 1, SeqCst, SeqCst)
            {
                Ok(_) => return Some(index),
                Err(seen) => current = seen,
            }
        }
    }

    /// Stops further claims of `epoch` (whatever `n` a late helper read); returns how many items
    /// were claimed.
    fn close(&self, epoch: u64, n: usize) -> usize {
        let previous = self.next.swap(epoch << 32 | 0xffff_ffff, SeqCst);
        ((previous & 0xffff_ffff) as usize).min(n)
    }

    /// Keeps the first panic of a helper's item for the leader.
    fn keep_panic(&self, payload: Box<dyn Any + Send>) {
        if let Ok(mut slot) = self.helper_panic.lock() {
            slot.get_or_insert(payload);
        }
    }

    /// A helper: spins until the leader publishes a loop, works on it, until `stop`.
    fn help(&self) {
        let mut seen = 0;
        let mut spins = Spin::default();
        while !self.stop.load(SeqCst) {
            let epoch = self.epoch.load(SeqCst);
            if epoch == seen {
                spins.pause();
                continue;
            }
            seen = epoch;
            let n = self.len.load(SeqCst);
            let body = self.body.load(SeqCst).cast::<&Body<'_>>();
            let _item = InItem::enter();
            while let Some(i) = self.claim(epoch, n) {
                // SAFETY: the claim of an item of `epoch` succeeded after `n` and `body` were
                // read, so the loop was still open when they were read (the leader publishes the
                // next loop only after closing this one, all SeqCst): `body` is the pointer `run`
                // published for `epoch`, to its local `&Body` (properly aligned, initialised, of
                // exactly this type). That local, and the body it refers to, live until `run` has
                // seen every claimed item done, which includes this one; nobody writes the local
                // meanwhile, so reading it here is a plain shared read.
                let f: &Body<'_> = unsafe { *body };
                if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(i))) {
                    self.keep_panic(payload);
                }
                self.done.fetch_add(1, SeqCst);
            }
        }
    }
}

/// A busy wait that offers the core to other runnable threads (kernel workers, other processes)
/// every few microseconds instead of holding it for the whole burst; with nothing else to run,
/// the yield returns at once and the thread stays awake.
#[derive(Default)]
struct Spin(u32);

impl Spin {
    fn pause(&mut self) {
        self.0 = self.0.wrapping_add(1);
        if self.0.is_multiple_of(256) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Marks this thread as running loop items until dropped (also when an item panics).
struct InItem(bool);

impl InItem {
    fn enter() -> Self {
        InItem(IN_ITEM.replace(true))
    }
}

impl Drop for InItem {
    fn drop(&mut self) {
        IN_ITEM.set(self.0);
    }
}

/// Whether `TT_OPS_NO_TEAM` is set: [`with_team`] then runs its closure as is (rayon only), to
/// compare the two.
fn disabled() -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    *DISABLED.get_or_init(|| std::env::var_os("TT_OPS_NO_TEAM").is_some())
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

struct RestoreLeads(*const Team);

impl Drop for RestoreLeads {
    fn drop(&mut self) {
        LEADS.set(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_each_once(n: usize) {
        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        for_each(n, |i| {
            hits[i].fetch_add(1, SeqCst);
        });
        assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "n = {n}");
    }

    #[test]
    fn every_item_runs_once_with_and_without_a_team() {
        for n in [0, 1, 2, 3, 17, 1000] {
            counts_each_once(n);
            with_team(|| {
                for _ in 0..50 {
                    counts_each_once(n);
                }
            });
        }
    }

    #[test]
    fn map_keeps_order_and_nested_loops_run() {
        let got = with_team(|| {
            map(40, |i| {
                // A nested loop inside an item runs serially on that thread.
                map(5, |j| i * 10 + j).into_iter().sum::<usize>()
            })
        });
        let want: Vec<usize> = (0..40).map(|i| (0..5).map(|j| i * 10 + j).sum()).collect();
        assert_eq!(got, want);
        assert_eq!(with_team(|| with_team(|| map(3, |i| i))), vec![0, 1, 2]);
    }

    #[test]
    fn map_mut_hands_each_element_to_its_index() {
        let mut items: Vec<usize> = (0..100).collect();
        let doubled = with_team(|| {
            map_mut(&mut items, |i, v| {
                *v += i;
                *v * 10
            })
        });
        assert_eq!(items, (0..100).map(|i| 2 * i).collect::<Vec<_>>());
        assert_eq!(doubled, (0..100).map(|i| 20 * i).collect::<Vec<_>>());
    }

    #[test]
    fn rayon_inside_a_team_still_completes() {
        let sum: u64 = with_team(|| (0..10_000u64).into_par_iter().sum());
        assert_eq!(sum, 49_995_000);
    }

    #[test]
    fn a_panicking_item_reaches_the_leader_and_the_team_survives() {
        let caught = panic::catch_unwind(|| {
            with_team(|| {
                for_each(64, |i| {
                    if i == 37 {
                        panic!("item 37");
                    }
                })
            })
        });
        assert!(caught.is_err());
        counts_each_once(100);
        with_team(|| counts_each_once(100));
    }
}
