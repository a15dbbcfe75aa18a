//! The daemon-wide cap on agents running at once (`config.json` `max_concurrent_runs`):
//! one slot per agent, taken by a worker for a run (it waits for one, so runs beyond the cap
//! stay queued) and by a `job test --exec` agent (which does not wait: it is refused when
//! none is free). Slots are tokens in a bounded channel, so a worker waiting for one also
//! hears shutdown.

use crossbeam_channel::{bounded, select, Receiver, Sender};

/// The free slots of the cap.
pub struct AgentSlots {
    give: Sender<()>,
    take: Receiver<()>,
    max: usize,
}

/// One agent slot, given back when dropped.
pub struct Slot<'a>(&'a AgentSlots);

impl AgentSlots {
    /// `max` slots, all free.
    pub fn new(max: usize) -> AgentSlots {
        let max = max.max(1);
        let (give, take) = bounded(max);
        for _ in 0..max {
            let _ = give.try_send(());
        }
        AgentSlots { give, take, max }
    }

    /// How many agents may run at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A free slot now, or None.
    pub fn try_take(&self) -> Option<Slot<'_>> {
        self.take.try_recv().ok().map(|()| Slot(self))
    }

    /// Waits for a free slot; None once `stop` disconnects (shutdown).
    pub fn wait(&self, stop: &Receiver<()>) -> Option<Slot<'_>> {
        select! {
            recv(self.take) -> t => t.ok().map(|()| Slot(self)),
            recv(stop) -> _ => None,
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let _ = self.0.give.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back() {
        let s = AgentSlots::new(2);
        let a = s.try_take().unwrap();
        let _b = s.try_take().unwrap();
        assert!(s.try_take().is_none());
        drop(a);
        assert!(s.try_take().is_some());
        let (tx, stop) = bounded::<()>(0);
        drop(tx);
        let _c = s.try_take();
        assert!(s.wait(&stop).is_none());
    }
}
