//! The profiler's recorder: a `tracing` layer that sums, per span name (kind of work), the spans
//! made and each thread's time inside them.
//!
//! Each thread keeps a [`Stack`] of the spans it is inside; every span event on a thread gives
//! the time since the thread's previous event to its innermost span (times the threads that
//! span holds, [`tt_mesh::trace::spread`]), so nested spans never count the same instant twice
//! on one thread. The [`Stack`] and [`Tally`] are fed durations, not instants.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Calls and busy time of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Spans made.
    pub calls: u64,
    /// Time inside its spans, summed over threads.
    pub busy: Duration,
}

/// Totals per kind (span name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally(BTreeMap<&'static str, Totals>);

impl Tally {
    /// One more span of `kind`.
    pub fn call(&mut self, kind: &'static str) {
        self.0.entry(kind).or_default().calls += 1;
    }

    /// `busy` more thread time on `kind`.
    pub fn busy(&mut self, kind: &'static str, busy: Duration) {
        self.0.entry(kind).or_default().busy += busy;
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The totals, by kind.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Totals)> + '_ {
        self.0.iter().map(|(&k, &t)| (k, t))
    }
}

/// One span entered on a thread.
#[derive(Debug, Clone, Copy)]
struct Frame {
    span: u64,
    kind: &'static str,
    /// Threads this span holds on this thread ([`tt_mesh::trace::spread`]); at least 1.
    threads: u32,
}

/// The spans a thread is inside, innermost last. Each event gives the time since the thread's
/// previous event, which goes to the innermost span (times the threads it holds).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stack(Vec<Frame>);

impl Stack {
    fn advance(&self, gap: Duration, tally: &mut Tally) {
        if let Some(top) = self.0.last() {
            tally.busy(top.kind, gap * top.threads);
        }
    }

    /// The thread enters `span` (of `kind`) `gap` after its previous event.
    pub fn enter(&mut self, span: u64, kind: &'static str, gap: Duration, tally: &mut Tally) {
        self.advance(gap, tally);
        self.0.push(Frame {
            span,
            kind,
            threads: 1,
        });
    }

    /// The thread leaves `span` `gap` after its previous event.
    pub fn exit(&mut self, span: u64, gap: Duration, tally: &mut Tally) {
        self.advance(gap, tally);
        if let Some(i) = self.0.iter().rposition(|f| f.span == span) {
            self.0.remove(i);
        }
    }

    /// `span` holds `threads` threads from now on (`gap` after the thread's previous event).
    pub fn set_threads(&mut self, span: u64, threads: u32, gap: Duration, tally: &mut Tally) {
        self.advance(gap, tally);
        if let Some(f) = self.0.iter_mut().rev().find(|f| f.span == span) {
            f.threads = threads.max(1);
        }
    }

    /// Whether the thread is inside no span.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A thread's spans and the instant of its last event.
struct ThreadState {
    stack: Stack,
    last: Instant,
}

#[derive(Default)]
struct State {
    tally: Tally,
    threads: HashMap<ThreadId, ThreadState>,
}

/// The profiler's recorder: a `tracing` layer ([`SpanTimes::layer`]) that sums calls and busy
/// time per span name of the decoder's kinds of work; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct SpanTimes(Arc<Mutex<State>>);

impl SpanTimes {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This recorder as a layer that sees only the decoder's kind spans (target
    /// `tt_mesh::trace::TARGET`, TRACE level).
    pub fn layer<S>(&self) -> Filtered<Self, Targets, S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let targets = Targets::new().with_target(tt_mesh::trace::TARGET, tracing::Level::TRACE);
        self.clone().with_filter(targets)
    }

    /// Forgets what was recorded (threads inside spans stay inside them).
    pub fn reset(&self) {
        self.state().tally = Tally::default();
    }

    /// What was recorded since the last reset or take; starts afresh.
    pub(crate) fn take(&self) -> Tally {
        std::mem::take(&mut self.state().tally)
    }

    /// Runs `event` on this thread's stack with the gap since the thread's previous event.
    fn on_thread(&self, event: impl FnOnce(&mut Stack, Duration, &mut Tally)) {
        let now = Instant::now();
        let mut guard = self.state();
        let State { tally, threads } = &mut *guard;
        let thread = threads
            .entry(std::thread::current().id())
            .or_insert_with(|| ThreadState {
                stack: Stack::default(),
                last: now,
            });
        let gap = match thread.stack.is_empty() {
            true => Duration::ZERO,
            false => now.saturating_duration_since(thread.last),
        };
        event(&mut thread.stack, gap, tally);
        thread.last = now;
    }
}

/// The `threads` field of a span record.
struct ThreadsField(Option<u64>);

impl Visit for ThreadsField {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "threads" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S> Layer<S> for SpanTimes
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        self.state().tally.call(attrs.metadata().name());
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(kind) = ctx.metadata(id).map(|m| m.name()) {
            self.on_thread(|stack, gap, tally| stack.enter(id.into_u64(), kind, gap, tally));
        }
    }

    fn on_exit(&self, id: &Id, _: Context<'_, S>) {
        self.on_thread(|stack, gap, tally| stack.exit(id.into_u64(), gap, tally));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut threads = ThreadsField(None);
        values.record(&mut threads);
        if let Some(n) = threads.0 {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            self.on_thread(|stack, gap, tally| stack.set_threads(id.into_u64(), n, gap, tally));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn stack_gives_each_gap_to_the_innermost_span_times_its_threads() {
        let mut tally = Tally::default();
        let mut main = Stack::default();
        let mut helper = Stack::default();
        main.enter(1, "qkv", MS * 100, &mut tally); // outside any span: not counted
        main.enter(2, "all_reduce", MS * 3, &mut tally); // qkv +3
        helper.enter(1, "qkv", Duration::ZERO, &mut tally);
        helper.exit(1, MS * 4, &mut tally); // qkv +4 (another thread, same span)
        main.exit(2, MS * 2, &mut tally); // all_reduce +2
        main.set_threads(1, 4, MS, &mut tally); // qkv +1
        main.set_threads(1, 1, MS * 5, &mut tally); // qkv +5 x 4
        main.exit(1, MS * 2, &mut tally); // qkv +2
        assert!(main.is_empty() && helper.is_empty());
        main.exit(9, MS * 7, &mut tally); // an unknown span on an empty stack: nothing
        for _ in 0..3 {
            tally.call("qkv");
        }
        tally.call("all_reduce");
        let got: Vec<_> = tally.iter().collect();
        let want = [
            (
                "all_reduce",
                Totals {
                    calls: 1,
                    busy: MS * 2,
                },
            ),
            (
                "qkv",
                Totals {
                    calls: 3,
                    busy: MS * (3 + 4 + 1 + 20 + 2),
                },
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_span_entered_twice_on_one_thread_counts_once() {
        let mut tally = Tally::default();
        let mut stack = Stack::default();
        stack.enter(1, "attention", Duration::ZERO, &mut tally);
        stack.enter(1, "attention", MS, &mut tally); // a device item on the step's thread
        stack.exit(1, MS * 2, &mut tally);
        stack.exit(1, MS * 3, &mut tally);
        assert_eq!(tally.iter().map(|(_, t)| t.busy).sum::<Duration>(), MS * 6);
    }
}
