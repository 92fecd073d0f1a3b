//! The synapse store: cells own dendrite segments, segments own synapses, and
//! every synapse listens to one presynaptic cell with a permanence in `[0, 1]`.
//!
//! This is the data structure the Temporal Memory learns in (reference:
//! `docs/htm-reference.md` §2). Three choices make it fast and reproducible:
//!
//! * **Flat arrays with `u32` ids.** Segment and synapse data live in
//!   parallel vectors indexed by id. Destroyed ids go to LIFO free lists and
//!   are handed out again most-recent-first, so memory stays bounded and the
//!   id sequence (which decides tie-breaks) matches htm.core's.
//! * **A presynaptic reverse index.** For every presynaptic cell we keep the
//!   synapses it feeds, split into connected and unconnected lists, so
//!   [`Connections::compute_activity`] touches only the synapses of the
//!   *active* cells, never the whole store.
//! * **Exact update rules.** A synapse is connected when its permanence is at
//!   least `connected_permanence − 1e-6`; pruning removes a synapse whose
//!   permanence would fall below `1e-6`; removing a synapse from a segment is
//!   a swap-remove (the last synapse takes its slot), which changes the order
//!   later walks see — all as in §2 and §9.

use serde::{Deserialize, Serialize};

use super::random::Random;

/// The global permanence epsilon (§0 "Conventions").
pub const PERMANENCE_EPSILON: f32 = 1e-6;

/// Marks a destroyed segment's owner or a destroyed synapse's segment.
const DEAD: u32 = u32::MAX;

/// One entry of the reverse index: a synapse fed by the indexed cell, and the
/// segment it belongs to (kept here so counting needs no second lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Fanout {
    segment: u32,
    synapse: u32,
}

/// Cells, their segments and the segments' synapses (§2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Connections {
    /// Number of cells that may own segments.
    num_cells: u32,
    /// `connected_permanence − EPS`: a synapse at or above it is connected.
    connected_threshold: f32,

    /// Per cell: its segments, in creation order.
    cell_segments: Vec<Vec<u32>>,

    /// Per segment id: owning cell, or `DEAD` once destroyed.
    segment_cell: Vec<u32>,
    /// Per segment id: its synapses (order changes by swap-remove). The
    /// buffer of a destroyed segment is kept for the next owner of the id.
    segment_synapses: Vec<Vec<u32>>,
    /// Per segment id: how many of its synapses are connected.
    segment_connected: Vec<u32>,
    /// Destroyed segment ids, reused last-in first-out.
    free_segments: Vec<u32>,

    /// Per synapse id: the presynaptic cell (an index into the input space).
    synapse_presyn: Vec<u32>,
    /// Per synapse id: the owning segment, or `DEAD` once destroyed.
    synapse_segment: Vec<u32>,
    /// Per synapse id: the permanence, always in `[0, 1]`.
    synapse_permanence: Vec<f32>,
    /// Per synapse id: its slot in its presynaptic cell's connected or
    /// unconnected list (which one follows from the permanence).
    synapse_slot: Vec<u32>,
    /// Destroyed synapse ids, reused last-in first-out.
    free_synapses: Vec<u32>,

    /// Per presynaptic cell: the connected synapses it feeds. Grows on demand,
    /// so the input space may be larger than `num_cells`.
    presyn_connected: Vec<Vec<Fanout>>,
    /// Per presynaptic cell: the unconnected synapses it feeds.
    presyn_unconnected: Vec<Vec<Fanout>>,

    /// Reused buffer for synapse lists being edited (not state).
    #[serde(skip)]
    scratch: Vec<u32>,
    /// Reused buffer for growth candidates (not state).
    #[serde(skip)]
    candidates: Vec<u32>,
}

/// Per-segment counts of active synapses, filled by
/// [`Connections::compute_activity`].
///
/// The count vectors are indexed by segment id and reset sparsely: only the
/// segments touched by the last computation are zeroed, so a step costs time
/// in proportion to the active synapses, not to the number of segments.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SegmentActivity {
    connected: Vec<u32>,
    potential: Vec<u32>,
    touched: Vec<u32>,
}

impl SegmentActivity {
    /// Active connected synapses on `segment` (0 for an id not counted).
    pub fn connected(&self, segment: u32) -> u32 {
        self.connected.get(segment as usize).copied().unwrap_or(0)
    }

    /// Active synapses on `segment` whatever their permanence.
    pub fn potential(&self, segment: u32) -> u32 {
        self.potential.get(segment as usize).copied().unwrap_or(0)
    }

    /// Segments with at least one active synapse, in no particular order.
    pub fn touched(&self) -> &[u32] {
        &self.touched
    }

    /// Zero the counts of the last computation and make room for `capacity`
    /// segment ids.
    fn reset(&mut self, capacity: usize) {
        for &s in &self.touched {
            self.connected[s as usize] = 0;
            self.potential[s as usize] = 0;
        }
        self.touched.clear();
        if self.potential.len() < capacity {
            self.connected.resize(capacity, 0);
            self.potential.resize(capacity, 0);
        }
    }

    #[inline]
    fn count(&mut self, segment: u32, connected: u32) {
        let s = segment as usize;
        if self.potential[s] == 0 {
            self.touched.push(segment);
        }
        self.potential[s] += 1;
        self.connected[s] += connected;
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        4 * (self.connected.capacity() + self.potential.capacity() + self.touched.capacity())
    }
}

impl Connections {
    /// An empty store for `num_cells` segment-owning cells. Synapses are
    /// connected at `connected_permanence − 1e-6` and above.
    pub fn new(num_cells: u32, connected_permanence: f32) -> Self {
        Self {
            num_cells,
            connected_threshold: connected_permanence - PERMANENCE_EPSILON,
            cell_segments: vec![Vec::new(); num_cells as usize],
            segment_cell: Vec::new(),
            segment_synapses: Vec::new(),
            segment_connected: Vec::new(),
            free_segments: Vec::new(),
            synapse_presyn: Vec::new(),
            synapse_segment: Vec::new(),
            synapse_permanence: Vec::new(),
            synapse_slot: Vec::new(),
            free_synapses: Vec::new(),
            presyn_connected: Vec::new(),
            presyn_unconnected: Vec::new(),
            scratch: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// Number of segment-owning cells.
    pub fn num_cells(&self) -> u32 {
        self.num_cells
    }

    /// The permanence at and above which a synapse is connected
    /// (`connected_permanence − 1e-6`).
    pub fn connected_threshold(&self) -> f32 {
        self.connected_threshold
    }

    // ----------------------------------------------------------------- create

    /// Give `cell` a new, empty segment and return its id.
    ///
    /// While the cell already has `max_segments_per_cell` segments, its least
    /// useful one (smallest Σ permanence², ties to the smaller id) is
    /// destroyed first. `0` means no limit.
    pub fn create_segment(&mut self, cell: u32, max_segments_per_cell: u32) -> u32 {
        if max_segments_per_cell > 0 {
            while self.cell_segments[cell as usize].len() >= max_segments_per_cell as usize {
                let victim = self.least_useful_segment(cell);
                self.destroy_segment(victim);
            }
        }
        let segment = match self.free_segments.pop() {
            Some(id) => {
                self.segment_cell[id as usize] = cell;
                self.segment_connected[id as usize] = 0;
                debug_assert!(self.segment_synapses[id as usize].is_empty());
                id
            }
            None => {
                let id = self.segment_cell.len() as u32;
                self.segment_cell.push(cell);
                self.segment_synapses.push(Vec::new());
                self.segment_connected.push(0);
                id
            }
        };
        self.cell_segments[cell as usize].push(segment);
        segment
    }

    /// The segment of `cell` with the smallest Σ permanence² (f32 sum in
    /// synapse order); ties go to the smaller segment id.
    fn least_useful_segment(&self, cell: u32) -> u32 {
        let mut best: Option<(f32, u32)> = None;
        for &segment in &self.cell_segments[cell as usize] {
            let score: f32 = self.segment_synapses[segment as usize]
                .iter()
                .map(|&s| {
                    let p = self.synapse_permanence[s as usize];
                    p * p
                })
                .fold(0.0, |acc, x| acc + x);
            let better = match best {
                None => true,
                Some((best_score, best_id)) => {
                    score < best_score || (score == best_score && segment < best_id)
                }
            };
            if better {
                best = Some((score, segment));
            }
        }
        best.expect("least_useful_segment of a cell without segments")
            .1
    }

    /// Connect `presynaptic_cell` to `segment` with `permanence` and return
    /// the synapse id.
    ///
    /// A segment never holds two synapses from the same presynaptic cell: if
    /// one exists its permanence is raised to `permanence` (when larger) and
    /// its id returned.
    pub fn create_synapse(&mut self, segment: u32, presynaptic_cell: u32, permanence: f32) -> u32 {
        debug_assert!(self.segment_exists(segment), "synapse on dead segment");
        let existing = self.segment_synapses[segment as usize]
            .iter()
            .copied()
            .find(|&s| self.synapse_presyn[s as usize] == presynaptic_cell);
        if let Some(synapse) = existing {
            if permanence > self.synapse_permanence[synapse as usize] {
                self.update_permanence(synapse, permanence);
            }
            return synapse;
        }

        let permanence = permanence.clamp(0.0, 1.0);
        let synapse = match self.free_synapses.pop() {
            Some(id) => {
                let i = id as usize;
                self.synapse_presyn[i] = presynaptic_cell;
                self.synapse_segment[i] = segment;
                self.synapse_permanence[i] = permanence;
                id
            }
            None => {
                let id = self.synapse_presyn.len() as u32;
                self.synapse_presyn.push(presynaptic_cell);
                self.synapse_segment.push(segment);
                self.synapse_permanence.push(permanence);
                self.synapse_slot.push(0);
                id
            }
        };
        self.segment_synapses[segment as usize].push(synapse);
        let connected = permanence >= self.connected_threshold;
        if connected {
            self.segment_connected[segment as usize] += 1;
        }
        self.index_insert(synapse, connected);
        synapse
    }

    // ---------------------------------------------------------------- destroy

    /// Remove `synapse`: from the reverse index, from its segment by
    /// swap-remove (the segment's last synapse takes its slot), and recycle
    /// its id.
    pub fn destroy_synapse(&mut self, synapse: u32) {
        let i = synapse as usize;
        let segment = self.synapse_segment[i];
        assert!(segment != DEAD, "synapse {synapse} destroyed twice");
        let connected = self.is_connected(synapse);
        self.index_remove(synapse, connected);
        if connected {
            self.segment_connected[segment as usize] -= 1;
        }
        let list = &mut self.segment_synapses[segment as usize];
        let at = list
            .iter()
            .position(|&s| s == synapse)
            .expect("synapse missing from its segment");
        list.swap_remove(at);
        self.synapse_segment[i] = DEAD;
        self.free_synapses.push(synapse);
    }

    /// Remove `segment` and all its synapses (last first), erase it from its
    /// cell's list keeping the order of the others, and recycle its id.
    pub fn destroy_segment(&mut self, segment: u32) {
        let cell = self.segment_cell[segment as usize];
        assert!(cell != DEAD, "segment {segment} destroyed twice");
        while let Some(&last) = self.segment_synapses[segment as usize].last() {
            self.destroy_synapse(last);
        }
        let list = &mut self.cell_segments[cell as usize];
        let at = list
            .iter()
            .position(|&s| s == segment)
            .expect("segment missing from its cell");
        list.remove(at);
        self.segment_cell[segment as usize] = DEAD;
        self.free_segments.push(segment);
    }

    // ------------------------------------------------------------ permanences

    /// Set the permanence of `synapse` to `permanence` clamped to `[0, 1]`,
    /// moving it between the connected and unconnected index when its status
    /// flips.
    pub fn update_permanence(&mut self, synapse: u32, permanence: f32) {
        let i = synapse as usize;
        let permanence = permanence.clamp(0.0, 1.0);
        let was = self.synapse_permanence[i] >= self.connected_threshold;
        let now = permanence >= self.connected_threshold;
        self.synapse_permanence[i] = permanence;
        if was != now {
            let segment = self.synapse_segment[i] as usize;
            self.index_remove(synapse, was);
            self.index_insert(synapse, now);
            if now {
                self.segment_connected[segment] += 1;
            } else {
                self.segment_connected[segment] -= 1;
            }
        }
    }

    /// Hebbian update of one segment: every synapse whose presynaptic cell is
    /// active (`is_active`) gains `increment`, every other loses `decrement`.
    ///
    /// With `prune`, a synapse whose new permanence would fall below `1e-6`
    /// is destroyed instead (after the walk, in walk order), and then the
    /// whole segment is destroyed if it is left with fewer than
    /// `segment_threshold` synapses.
    pub fn adapt_segment(
        &mut self,
        segment: u32,
        is_active: impl Fn(u32) -> bool,
        increment: f32,
        decrement: f32,
        prune: bool,
        segment_threshold: u32,
    ) {
        let mut doomed = std::mem::take(&mut self.scratch);
        doomed.clear();
        let count = self.segment_synapses[segment as usize].len();
        for k in 0..count {
            let synapse = self.segment_synapses[segment as usize][k];
            let s = synapse as usize;
            let delta = if is_active(self.synapse_presyn[s]) {
                increment
            } else {
                -decrement
            };
            let permanence = self.synapse_permanence[s];
            if prune && permanence + delta < PERMANENCE_EPSILON {
                doomed.push(synapse);
            } else {
                self.update_permanence(synapse, permanence + delta);
            }
        }
        for &synapse in &doomed {
            self.destroy_synapse(synapse);
        }
        self.scratch = doomed;
        if prune
            && (self.segment_synapses[segment as usize].len() as u64) < u64::from(segment_threshold)
        {
            self.destroy_segment(segment);
        }
    }

    /// Make sure at least `k` synapses of `segment` are connected by adding
    /// the same amount to every synapse: the gap between the connected
    /// threshold and the `k`-th largest permanence (`k` clipped to the number
    /// of synapses). Nothing happens when `k == 0`, the segment has no
    /// synapses, or it already has `k` connected.
    pub fn raise_permanences_to_threshold(&mut self, segment: u32, k: u32) {
        let synapses = &self.segment_synapses[segment as usize];
        if k == 0 || synapses.is_empty() || self.segment_connected[segment as usize] >= k {
            return;
        }
        let mut perms = std::mem::take(&mut self.scratch);
        perms.clear();
        // The scratch buffer holds f32 bit patterns; compare them as floats.
        perms.extend(
            synapses
                .iter()
                .map(|&s| self.synapse_permanence[s as usize].to_bits()),
        );
        let k = (k as usize).min(perms.len());
        let (_, kth, _) = perms.select_nth_unstable_by(k - 1, |a, b| {
            f32::from_bits(*b)
                .partial_cmp(&f32::from_bits(*a))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let kth = f32::from_bits(*kth);
        self.scratch = perms;
        let gap = self.connected_threshold - kth;
        if gap > 0.0 {
            self.bump_segment(segment, gap);
        }
    }

    /// Add `delta` to the permanence of every synapse of `segment` (clamped).
    pub fn bump_segment(&mut self, segment: u32, delta: f32) {
        for k in 0..self.segment_synapses[segment as usize].len() {
            let synapse = self.segment_synapses[segment as usize][k];
            let permanence = self.synapse_permanence[synapse as usize];
            self.update_permanence(synapse, permanence + delta);
        }
    }

    /// Destroy the `n` weakest synapses of `segment` whose presynaptic cell
    /// is not in `exclude` (sorted ascending): ordered by permanence, ties to
    /// the smaller synapse id.
    pub fn destroy_min_permanence_synapses(&mut self, segment: u32, n: usize, exclude: &[u32]) {
        let mut doomed = std::mem::take(&mut self.scratch);
        doomed.clear();
        doomed.extend(
            self.segment_synapses[segment as usize]
                .iter()
                .copied()
                .filter(|&s| {
                    exclude
                        .binary_search(&self.synapse_presyn[s as usize])
                        .is_err()
                }),
        );
        let perms = &self.synapse_permanence;
        doomed.sort_unstable_by(|&a, &b| {
            perms[a as usize]
                .partial_cmp(&perms[b as usize])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        doomed.truncate(n);
        for &synapse in &doomed {
            self.destroy_synapse(synapse);
        }
        self.scratch = doomed;
    }

    /// Grow synapses from `candidates` (presynaptic cells, sorted) onto
    /// `segment` with `initial_permanence` (§2 `grow_synapses`).
    ///
    /// Up to `max_new` (0 = all candidates) new synapses are made. If that
    /// would take the segment past `max_per_segment` (0 = no limit), its
    /// weakest synapses from non-candidates are destroyed first, and growth is
    /// capped at the room left. Candidates are shuffled with `rng` only when
    /// fewer than all of them are wanted. A candidate already on the segment
    /// does not count as new, but its permanence is raised to
    /// `initial_permanence` if lower.
    pub fn grow_synapses(
        &mut self,
        segment: u32,
        candidates: &[u32],
        initial_permanence: f32,
        rng: &mut Random,
        max_new: u32,
        max_per_segment: u32,
    ) {
        let mut n = if max_new == 0 {
            candidates.len()
        } else {
            (max_new as usize).min(candidates.len())
        };
        if max_per_segment > 0 {
            let limit = max_per_segment as usize;
            let held = self.segment_synapses[segment as usize].len();
            if held + n > limit {
                self.destroy_min_permanence_synapses(segment, held + n - limit, candidates);
            }
            let held = self.segment_synapses[segment as usize].len();
            n = n.min(limit.saturating_sub(held));
        }
        if n == 0 {
            return;
        }
        let mut order = std::mem::take(&mut self.candidates);
        order.clear();
        order.extend_from_slice(candidates);
        if max_new > 0 && (max_new as usize) < candidates.len() {
            rng.shuffle(&mut order);
        }
        let target = self.segment_synapses[segment as usize].len() + n;
        for &cell in &order {
            if self.segment_synapses[segment as usize].len() >= target {
                break;
            }
            self.create_synapse(segment, cell, initial_permanence);
        }
        self.candidates = order;
    }

    // --------------------------------------------------------------- activity

    /// Count, for every segment, its synapses from `active_presynaptic`
    /// cells: connected ones into [`SegmentActivity::connected`], all of them
    /// into [`SegmentActivity::potential`]. Work is proportional to the
    /// synapses fed by the active cells.
    pub fn compute_activity(&self, active_presynaptic: &[u32], activity: &mut SegmentActivity) {
        activity.reset(self.segment_cell.len());
        for &cell in active_presynaptic {
            if let Some(list) = self.presyn_connected.get(cell as usize) {
                for f in list {
                    activity.count(f.segment, 1);
                }
            }
            if let Some(list) = self.presyn_unconnected.get(cell as usize) {
                for f in list {
                    activity.count(f.segment, 0);
                }
            }
        }
    }

    // -------------------------------------------------------------- accessors

    /// The live segments of `cell`, in creation order.
    pub fn segments_for_cell(&self, cell: u32) -> &[u32] {
        &self.cell_segments[cell as usize]
    }

    /// The synapses of `segment`, in their current (swap-remove) order.
    pub fn synapses_for_segment(&self, segment: u32) -> &[u32] {
        &self.segment_synapses[segment as usize]
    }

    /// The cell owning `segment`.
    pub fn cell_for_segment(&self, segment: u32) -> u32 {
        self.segment_cell[segment as usize]
    }

    /// The segment holding `synapse`.
    pub fn segment_for_synapse(&self, synapse: u32) -> u32 {
        self.synapse_segment[synapse as usize]
    }

    /// Whether `segment` is a live id.
    pub fn segment_exists(&self, segment: u32) -> bool {
        self.segment_cell
            .get(segment as usize)
            .is_some_and(|&c| c != DEAD)
    }

    /// The permanence of `synapse`.
    pub fn permanence(&self, synapse: u32) -> f32 {
        self.synapse_permanence[synapse as usize]
    }

    /// The presynaptic cell of `synapse`.
    pub fn presynaptic_cell(&self, synapse: u32) -> u32 {
        self.synapse_presyn[synapse as usize]
    }

    /// Whether `synapse` is connected.
    pub fn is_connected(&self, synapse: u32) -> bool {
        self.synapse_permanence[synapse as usize] >= self.connected_threshold
    }

    /// Number of live segments.
    pub fn num_segments(&self) -> usize {
        self.segment_cell.len() - self.free_segments.len()
    }

    /// Number of live synapses.
    pub fn num_synapses(&self) -> usize {
        self.synapse_presyn.len() - self.free_synapses.len()
    }

    /// Number of connected synapses on `segment`.
    pub fn num_connected(&self, segment: u32) -> u32 {
        self.segment_connected[segment as usize]
    }

    /// One past the largest segment id ever handed out (size for per-segment
    /// buffers).
    pub fn segment_capacity(&self) -> usize {
        self.segment_cell.len()
    }

    /// Heap bytes held (capacities, not just lengths).
    pub fn memory_bytes(&self) -> usize {
        fn nested<T>(v: &[Vec<T>]) -> usize {
            v.iter().map(|x| x.capacity() * size_of::<T>()).sum()
        }
        let outer = size_of::<Vec<u32>>()
            * (self.cell_segments.capacity()
                + self.segment_synapses.capacity()
                + self.presyn_connected.capacity()
                + self.presyn_unconnected.capacity());
        outer
            + nested(&self.cell_segments)
            + nested(&self.segment_synapses)
            + nested(&self.presyn_connected)
            + nested(&self.presyn_unconnected)
            + 4 * (self.segment_cell.capacity()
                + self.segment_connected.capacity()
                + self.free_segments.capacity()
                + self.synapse_presyn.capacity()
                + self.synapse_segment.capacity()
                + self.synapse_permanence.capacity()
                + self.synapse_slot.capacity()
                + self.free_synapses.capacity()
                + self.scratch.capacity()
                + self.candidates.capacity())
    }

    // ---------------------------------------------------------- reverse index

    fn index_insert(&mut self, synapse: u32, connected: bool) {
        let presyn = self.synapse_presyn[synapse as usize] as usize;
        if presyn >= self.presyn_connected.len() {
            self.presyn_connected.resize_with(presyn + 1, Vec::new);
            self.presyn_unconnected.resize_with(presyn + 1, Vec::new);
        }
        let list = if connected {
            &mut self.presyn_connected[presyn]
        } else {
            &mut self.presyn_unconnected[presyn]
        };
        self.synapse_slot[synapse as usize] = list.len() as u32;
        list.push(Fanout {
            segment: self.synapse_segment[synapse as usize],
            synapse,
        });
    }

    fn index_remove(&mut self, synapse: u32, connected: bool) {
        let presyn = self.synapse_presyn[synapse as usize] as usize;
        let list = if connected {
            &mut self.presyn_connected[presyn]
        } else {
            &mut self.presyn_unconnected[presyn]
        };
        let slot = self.synapse_slot[synapse as usize] as usize;
        debug_assert_eq!(list[slot].synapse, synapse);
        list.swap_remove(slot);
        if let Some(moved) = list.get(slot) {
            self.synapse_slot[moved.synapse as usize] = slot as u32;
        }
    }
}
