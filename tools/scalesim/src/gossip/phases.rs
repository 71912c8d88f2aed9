//! The scripted parts of a run: layout changes, the quiet stretch, the kill, and the summary.

use ringkv::ring::layout::MemberState;

use super::{ChangeResult, KillResult, Sim, US_PER_MS};

/// min, median, max of `v` (ms), or zeros for an empty set.
pub fn spread(mut v: Vec<f64>) -> [f64; 3] {
    if v.is_empty() {
        return [0.0; 3];
    }
    v.sort_by(f64::total_cmp);
    [v[0], v[v.len() / 2], v[v.len() - 1]]
}

fn ms(us: u64) -> f64 {
    us as f64 / US_PER_MS as f64
}

impl Sim {
    /// An operator action at a random live node: CLUSTER LEAVE of a random active member
    /// (or CLUSTER CANCEL of one leaving), through `Layout::set_state`.
    pub(super) fn start_change(&mut self, _k: usize) {
        self.finish_change();
        let n = self.nodes.len() as u64;
        let origin = loop {
            let o = self.plan_rng.below(n) as u32;
            if self.nodes[o as usize].alive {
                break o;
            }
        };
        let target = self.ids[self.plan_rng.below(n) as usize];
        let node = &mut self.nodes[origin as usize];
        let next = match node.layout.get(target).map(|m| m.state) {
            Some(MemberState::Leaving) => MemberState::Active,
            Some(MemberState::Active | MemberState::Joining | MemberState::Removed) | None => {
                MemberState::Leaving
            }
        };
        node.layout.set_state(target, next);
        let layout = std::mem::take(&mut self.nodes[origin as usize].layout);
        let snap = self.intern(&layout);
        let node = &mut self.nodes[origin as usize];
        node.layout = layout;
        node.snap = snap.clone();
        self.change = Some((snap.digest, self.now_us, origin));
        self.reach.iter_mut().for_each(|r| *r = None);
        self.origin_heard.iter_mut().for_each(|r| *r = None);
        self.reach[origin as usize] = Some(self.now_us);
        self.origin_heard[origin as usize] = Some(self.now_us);
        self.change_bytes0 = self.bytes_sent();
    }

    /// Records the change being timed (at the next scripted event, or the end).
    pub(super) fn finish_change(&mut self) {
        let Some((_, start, _)) = self.change.take() else {
            return;
        };
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect();
        let after = |t: Option<u64>| t.map_or(f64::INFINITY, |t| ms(t - start));
        let reach: Vec<f64> = live.iter().map(|&i| after(self.reach[i])).collect();
        let heard: Vec<f64> = live.iter().map(|&i| after(self.origin_heard[i])).collect();
        let [_, median, all] = spread(reach);
        let converged = heard.iter().copied().fold(0.0, f64::max);
        let bytes = (self.bytes_sent() - self.change_bytes0) as f64 / live.len().max(1) as f64;
        self.report.changes.push(ChangeResult {
            reach_all_ms: all,
            reach_median_ms: median,
            origin_converged_ms: converged,
            bytes_per_node: bytes,
        });
    }

    pub(super) fn bytes_sent(&self) -> u64 {
        self.nodes.iter().map(|n| n.bytes_sent).sum()
    }

    fn msgs_sent(&self) -> u64 {
        self.nodes.iter().map(|n| n.msgs_sent).sum()
    }

    pub(super) fn quiet(&mut self, start: bool) {
        self.finish_change();
        if start {
            self.quiet_from = Some((self.now_us, self.msgs_sent(), self.bytes_sent()));
            return;
        }
        let Some((t0, m0, b0)) = self.quiet_from else {
            return;
        };
        let secs = (self.now_us - t0) as f64 / 1e6;
        let per = self.nodes.len() as f64 * secs.max(1e-9);
        self.report.msgs_per_node_s = (self.msgs_sent() - m0) as f64 / per;
        self.report.bytes_per_node_s = (self.bytes_sent() - b0) as f64 / per;
    }

    /// The victim stops: it sends and answers nothing from now on.
    pub(super) fn kill(&mut self) {
        self.nodes[self.victim as usize].alive = false;
        self.killed_at_us = Some(self.now_us);
    }

    pub(super) fn finish(&mut self) {
        let now_ms = self.now_us / US_PER_MS;
        // Silences still open at the end count too.
        for i in 0..self.nodes.len() {
            if !self.nodes[i].observer || !self.nodes[i].alive {
                continue;
            }
            for (&p, det) in &self.nodes[i].watch {
                if p == self.victim && self.killed_at_us.is_some() {
                    continue;
                }
                let phi = det.phi(now_ms);
                self.report.max_phi_live = self.report.max_phi_live.max(phi);
                if phi >= self.cfg.phi_convict_threshold / 2.0 {
                    self.report.false_suspect += 1;
                }
                if phi >= self.cfg.phi_convict_threshold {
                    self.report.false_down += 1;
                }
            }
        }
        let observers = self.report.observers as f64;
        let peers = self.nodes.len().saturating_sub(1) as f64;
        self.report.pair_seconds = observers * peers * now_ms as f64 / 1000.0;
        let Some(killed) = self.killed_at_us else {
            return;
        };
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect();
        let since = |t: Option<u64>| t.map(|t| ms(t - killed));
        self.report.kill = KillResult {
            suspect_ms: spread(
                live.iter()
                    .filter_map(|&i| since(self.suspect_at[i]))
                    .collect(),
            ),
            down_ms: spread(
                live.iter()
                    .filter_map(|&i| since(self.down_at[i]))
                    .collect(),
            ),
            not_convicted: live.iter().filter(|&&i| self.down_at[i].is_none()).count(),
            live: live.len(),
        };
    }
}
