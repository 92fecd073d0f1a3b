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
//!   synapses it feeds, each entry flagged connected or not (the flag flips
//!   in place when a permanence crosses the threshold), so
//!   [`Connections::compute_activity`] touches only the synapses of the
//!   *active* cells, never the whole store.
//! * **No per-cell `Vec`.** The per-cell lists (segments of a cell, synapses
//!   fed by a cell) live in a [`ListPool`]: one flat buffer of
//!   power-of-two blocks plus a 12-byte head per list, instead of a 24-byte
//!   `Vec` header and a heap block per cell.
//! * **Permanences live with their segment.** Next to each segment's
//!   synapse ids, [`Link`]s hold their presynaptic cells and permanences in
//!   the same order, so adapting, growing onto or ranking a segment reads and
//!   writes a few consecutive cache lines instead of one scattered synapse
//!   record per synapse (that load, and then the store of the new
//!   permanence, were a third of `adapt_segment`'s time). A live synapse's
//!   permanence is only there; the synapse record keeps it once the synapse
//!   is destroyed. Checkpoints keep the earlier layout (the permanence in
//!   every synapse record): the links are rebuilt from it on load.
//! * **Exact update rules.** A synapse is connected when its permanence is at
//!   least `connected_permanence − 1e-6`; pruning removes a synapse whose
//!   permanence would fall below `1e-6`; removing a synapse from a segment is
//!   a swap-remove (the last synapse takes its slot), which changes the order
//!   later walks see — all as in §2 and §9.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::prefetch;
use super::random::Random;

/// The global permanence epsilon (§0 "Conventions").
pub const PERMANENCE_EPSILON: f32 = 1e-6;

/// Marks a destroyed segment's owner or a destroyed synapse's segment.
const DEAD: u32 = u32::MAX;

/// The connected flag in [`Fanout::tagged`].
const CONNECTED_FLAG: u32 = 1 << 31;

/// One entry of the reverse index: a synapse fed by the indexed cell, and the
/// segment it belongs to (kept here so counting needs no second lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Fanout {
    /// The segment id, with [`CONNECTED_FLAG`] set while the synapse is
    /// connected.
    tagged: u32,
    synapse: u32,
}

impl Fanout {
    fn segment(self) -> u32 {
        self.tagged & !CONNECTED_FLAG
    }

    #[cfg(test)]
    fn connected(self) -> bool {
        self.tagged & CONNECTED_FLAG != 0
    }
}

/// One synapse: the cell it listens to, the segment that owns it (`DEAD`
/// once destroyed), its permanence in `[0, 1]`, and its slot in the
/// presynaptic cell's fanout list.
///
/// In memory, `permanence` is only kept up to date once the synapse is
/// destroyed (the value it had then, which a checkpoint stores): a live
/// synapse's permanence is in its segment's [`Link`]. In a checkpoint every
/// record holds the synapse's permanence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Synapse {
    presyn: u32,
    segment: u32,
    permanence: f32,
    slot: u32,
}

/// The part of a [`Synapse`] that walks over a segment read, stored per
/// segment in the order of its synapse ids (see the module notes).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Link {
    presyn: u32,
    permanence: f32,
}

/// Where one list of a [`ListPool`] lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ListHead {
    start: u32,
    len: u32,
    cap: u32,
}

/// Many small growable lists in one buffer: list `i` occupies
/// `items[start..start + len]` of a block of `cap` slots (a power of two, at
/// least 4; 0 while the list has never held anything). A full list moves to
/// a block twice as large; freed blocks are kept per size and reused. Memory
/// is at most about twice the items plus 12 bytes a list.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ListPool<T> {
    heads: Vec<ListHead>,
    items: Vec<T>,
    /// Free block starts, by `log2(cap)`.
    free: Vec<Vec<u32>>,
}

impl<T: Copy + Default> ListPool<T> {
    fn with_lists(n: usize) -> Self {
        Self {
            heads: vec![ListHead::default(); n],
            items: Vec::new(),
            free: Vec::new(),
        }
    }

    fn num_lists(&self) -> usize {
        self.heads.len()
    }

    /// Make lists `0..n` exist (new ones empty).
    fn ensure_lists(&mut self, n: usize) {
        if self.heads.len() < n {
            self.heads.resize(n, ListHead::default());
        }
    }

    #[inline]
    fn get(&self, list: usize) -> &[T] {
        let h = self.heads[list];
        &self.items[h.start as usize..(h.start + h.len) as usize]
    }

    #[inline]
    fn get_mut(&mut self, list: usize) -> &mut [T] {
        let h = self.heads[list];
        &mut self.items[h.start as usize..(h.start + h.len) as usize]
    }

    fn push(&mut self, list: usize, item: T) {
        let h = self.heads[list];
        if h.len == h.cap {
            let cap = (h.cap * 2).max(4);
            let start = self.alloc(cap);
            self.items
                .copy_within(h.start as usize..(h.start + h.len) as usize, start as usize);
            if h.cap > 0 {
                self.release(h.start, h.cap);
            }
            self.heads[list] = ListHead {
                start,
                len: h.len,
                cap,
            };
        }
        let h = &mut self.heads[list];
        self.items[(h.start + h.len) as usize] = item;
        h.len += 1;
    }

    /// Remove item `at`, the last item taking its place.
    fn swap_remove(&mut self, list: usize, at: usize) {
        let h = &mut self.heads[list];
        debug_assert!(at < h.len as usize);
        h.len -= 1;
        let last = (h.start + h.len) as usize;
        self.items[h.start as usize + at] = self.items[last];
    }

    /// Remove item `at`, keeping the order of the others.
    fn remove(&mut self, list: usize, at: usize) {
        let h = &mut self.heads[list];
        debug_assert!(at < h.len as usize);
        let (start, end) = (h.start as usize, (h.start + h.len) as usize);
        h.len -= 1;
        self.items.copy_within(start + at + 1..end, start + at);
    }

    fn alloc(&mut self, cap: u32) -> u32 {
        let class = cap.trailing_zeros() as usize;
        if let Some(start) = self.free.get_mut(class).and_then(Vec::pop) {
            return start;
        }
        let start = u32::try_from(self.items.len()).expect("list pool exceeds u32 slots");
        self.items
            .resize(self.items.len() + cap as usize, T::default());
        start
    }

    fn release(&mut self, start: u32, cap: u32) {
        let class = cap.trailing_zeros() as usize;
        if self.free.len() <= class {
            self.free.resize_with(class + 1, Vec::new);
        }
        self.free[class].push(start);
    }

    /// Total items over all lists.
    #[cfg(test)]
    fn total_len(&self) -> usize {
        self.heads.iter().map(|h| h.len as usize).sum()
    }

    fn memory_bytes(&self) -> usize {
        self.heads.capacity() * size_of::<ListHead>()
            + self.items.capacity() * size_of::<T>()
            + self.free.capacity() * size_of::<Vec<u32>>()
            + self.free.iter().map(|f| f.capacity() * 4).sum::<usize>()
    }
}

impl Default for Fanout {
    fn default() -> Self {
        Self {
            tagged: 0,
            synapse: DEAD,
        }
    }
}

/// Cells, their segments and the segments' synapses (§2).
///
/// Serialized as [`StoredConnections`]: the permanences in the synapse
/// records, no links, no scratch buffers.
#[derive(Debug)]
pub struct Connections {
    /// Number of cells that may own segments.
    num_cells: u32,
    /// `connected_permanence − EPS`: a synapse at or above it is connected.
    connected_threshold: f32,

    /// Per cell: its segments, in creation order.
    cell_segments: ListPool<u32>,

    /// Per segment id: owning cell, or `DEAD` once destroyed.
    segment_cell: Vec<u32>,
    /// Per segment id: its synapses (order changes by swap-remove). The
    /// buffer of a destroyed segment is kept for the next owner of the id.
    segment_synapses: Vec<Vec<u32>>,
    /// Per segment id: presynaptic cell and permanence of each synapse, in
    /// the order of `segment_synapses` (the only place a live synapse's
    /// permanence is kept).
    segment_links: Vec<Vec<Link>>,
    /// Heap bytes of the lists in `segment_synapses` and `segment_links`
    /// (their capacities), kept up to date as they grow, so that
    /// [`Connections::memory_bytes`] (asked after every step the server
    /// takes) is not a walk over every segment.
    segment_list_bytes: usize,
    /// Per segment id: how many of its synapses are connected.
    segment_connected: Vec<u32>,
    /// Destroyed segment ids, reused last-in first-out.
    free_segments: Vec<u32>,

    /// Per synapse id: what the synapse is (one record, so the fields a
    /// walk over a segment needs share a cache line).
    synapses: Vec<Synapse>,
    /// Destroyed synapse ids, reused last-in first-out.
    free_synapses: Vec<u32>,

    /// Per presynaptic cell: the synapses it feeds, flagged connected or
    /// not. Grows on demand, so the input space may be larger than
    /// `num_cells`.
    fanout: ListPool<Fanout>,

    /// Reused buffer for synapse lists being edited (not state).
    scratch: Vec<u32>,
    /// Reused buffer for the synapses an adaptation moved across the
    /// connected threshold (not state).
    crossed: Vec<u32>,
    /// Reused buffer for growth candidates (not state).
    candidates: Vec<u32>,
}

/// Heap bytes of the lists `lists` (their capacities).
fn list_bytes<T>(lists: &[Vec<T>]) -> usize {
    lists.iter().map(|x| x.capacity() * size_of::<T>()).sum()
}

/// A copy of the state. The copied segment lists hold only their lengths,
/// so their byte count is taken again from the copy.
impl Clone for Connections {
    fn clone(&self) -> Self {
        let segment_synapses = self.segment_synapses.clone();
        let segment_links = self.segment_links.clone();
        Self {
            num_cells: self.num_cells,
            connected_threshold: self.connected_threshold,
            cell_segments: self.cell_segments.clone(),
            segment_cell: self.segment_cell.clone(),
            segment_list_bytes: list_bytes(&segment_synapses) + list_bytes(&segment_links),
            segment_synapses,
            segment_links,
            segment_connected: self.segment_connected.clone(),
            free_segments: self.free_segments.clone(),
            synapses: self.synapses.clone(),
            free_synapses: self.free_synapses.clone(),
            fanout: self.fanout.clone(),
            scratch: self.scratch.clone(),
            crossed: self.crossed.clone(),
            candidates: self.candidates.clone(),
        }
    }
}

/// What a checkpoint holds of [`Connections`]: its state with every
/// synapse's permanence in the synapse records (the layout before the
/// per-segment links). Loading one rebuilds the links from the records.
/// Borrowed when saving, owned when loading.
#[derive(Serialize, Deserialize)]
struct StoredConnections<'a> {
    num_cells: u32,
    connected_threshold: f32,
    cell_segments: Cow<'a, ListPool<u32>>,
    segment_cell: Cow<'a, [u32]>,
    segment_synapses: Cow<'a, [Vec<u32>]>,
    segment_connected: Cow<'a, [u32]>,
    free_segments: Cow<'a, [u32]>,
    synapses: StoredSynapses<'a>,
    free_synapses: Cow<'a, [u32]>,
    fanout: Cow<'a, ListPool<Fanout>>,
}

/// The synapse records of a checkpoint, each with its permanence.
///
/// Saving writes them straight from the live [`Connections`], looking up each
/// live synapse's permanence in its segment's links as it goes, so a
/// checkpoint needs no copy of the records (a copy is megabytes per model,
/// and a model's checkpoint is written again and again).
enum StoredSynapses<'a> {
    /// Borrowed when saving.
    Saving(&'a Connections),
    /// Owned when loading.
    Loaded(Vec<Synapse>),
}

impl Serialize for StoredSynapses<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Saving(connections) => serializer.collect_seq(
                connections
                    .synapses
                    .iter()
                    .enumerate()
                    .map(|(id, synapse)| connections.stored_synapse(id as u32, *synapse)),
            ),
            Self::Loaded(synapses) => synapses.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for StoredSynapses<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::deserialize(deserializer).map(Self::Loaded)
    }
}

impl Serialize for Connections {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredConnections {
            num_cells: self.num_cells,
            connected_threshold: self.connected_threshold,
            cell_segments: Cow::Borrowed(&self.cell_segments),
            segment_cell: Cow::Borrowed(&self.segment_cell),
            segment_synapses: Cow::Borrowed(&self.segment_synapses),
            segment_connected: Cow::Borrowed(&self.segment_connected),
            free_segments: Cow::Borrowed(&self.free_segments),
            synapses: StoredSynapses::Saving(self),
            free_synapses: Cow::Borrowed(&self.free_synapses),
            fanout: Cow::Borrowed(&self.fanout),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Connections {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StoredConnections::deserialize(deserializer).map(Self::from)
    }
}

impl From<StoredConnections<'_>> for Connections {
    fn from(stored: StoredConnections<'_>) -> Self {
        let StoredSynapses::Loaded(synapses) = stored.synapses else {
            unreachable!("deserializing always yields StoredSynapses::Loaded")
        };
        let segment_links: Vec<Vec<Link>> = stored
            .segment_synapses
            .iter()
            .map(|ids| {
                ids.iter()
                    .map(|&s| {
                        let synapse = synapses[s as usize];
                        Link {
                            presyn: synapse.presyn,
                            permanence: synapse.permanence,
                        }
                    })
                    .collect()
            })
            .collect();
        Self {
            num_cells: stored.num_cells,
            connected_threshold: stored.connected_threshold,
            cell_segments: stored.cell_segments.into_owned(),
            segment_cell: stored.segment_cell.into_owned(),
            segment_list_bytes: list_bytes(&stored.segment_synapses) + list_bytes(&segment_links),
            segment_synapses: stored.segment_synapses.into_owned(),
            segment_links,
            segment_connected: stored.segment_connected.into_owned(),
            free_segments: stored.free_segments.into_owned(),
            synapses,
            free_synapses: stored.free_synapses.into_owned(),
            fanout: stored.fanout.into_owned(),
            scratch: Vec::new(),
            crossed: Vec::new(),
            candidates: Vec::new(),
        }
    }
}

/// Per-segment counts of active synapses, filled by
/// [`Connections::compute_activity`].
///
/// The counts are indexed by segment id and zeroed all at once before each
/// computation: the active cells' synapses reach most segments anyway, and
/// one `memset` of 8 bytes a segment is cheaper than remembering, synapse by
/// synapse, which segments were touched. Each segment's two counts share
/// one `u64` (potential in the low half, connected in the high half), so
/// counting a synapse is one add.
///
/// The segments whose potential count reaches a threshold are listed while
/// counting (the count passes the threshold exactly once, as it grows by
/// one), so the caller looking for active and matching segments reads that
/// short list instead of every touched segment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SegmentActivity {
    /// Per segment id: `connected << 32 | potential`.
    counts: Vec<u64>,
    /// Segments whose potential count reached `reach_threshold`, in the order
    /// they reached it.
    reached: Vec<u32>,
    /// The potential count that puts a segment into `reached` (at least 1).
    reach_threshold: u32,
}

impl SegmentActivity {
    /// Active connected synapses on `segment` (0 for an id not counted).
    pub fn connected(&self, segment: u32) -> u32 {
        self.counts
            .get(segment as usize)
            .map_or(0, |&c| (c >> 32) as u32)
    }

    /// Active synapses on `segment` whatever their permanence.
    pub fn potential(&self, segment: u32) -> u32 {
        self.counts.get(segment as usize).map_or(0, |&c| c as u32)
    }

    /// Segments with at least `reach_threshold` active synapses (the
    /// threshold given to [`Connections::compute_activity`]), in no
    /// particular order.
    pub fn reached(&self) -> &[u32] {
        &self.reached
    }

    /// Zero the counts of `capacity` segment ids.
    fn reset(&mut self, capacity: usize, reach_threshold: u32) {
        self.counts.clear();
        self.counts.resize(capacity, 0);
        self.reached.clear();
        self.reach_threshold = reach_threshold.max(1);
    }

    /// Count the active synapses listed in `entries`.
    #[inline]
    fn count_all(&mut self, entries: &[Fanout]) {
        let counts = &mut self.counts[..];
        let reach = self.reach_threshold;
        for f in entries {
            let segment = f.segment();
            let c = &mut counts[segment as usize];
            // One for potential, plus 1 << 32 when connected (the flag is bit
            // 31 of `tagged`).
            *c += 1 + (u64::from(f.tagged & CONNECTED_FLAG) << 1);
            // Rarely taken: most segments see fewer active synapses.
            if *c as u32 == reach {
                self.reached.push(segment);
            }
        }
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        8 * self.counts.capacity() + 4 * self.reached.capacity()
    }
}

impl Connections {
    /// An empty store for `num_cells` segment-owning cells. Synapses are
    /// connected at `connected_permanence − 1e-6` and above.
    pub fn new(num_cells: u32, connected_permanence: f32) -> Self {
        Self {
            num_cells,
            connected_threshold: connected_permanence - PERMANENCE_EPSILON,
            cell_segments: ListPool::with_lists(num_cells as usize),
            segment_cell: Vec::new(),
            segment_synapses: Vec::new(),
            segment_links: Vec::new(),
            segment_list_bytes: 0,
            segment_connected: Vec::new(),
            free_segments: Vec::new(),
            synapses: Vec::new(),
            free_synapses: Vec::new(),
            fanout: ListPool::default(),
            scratch: Vec::new(),
            crossed: Vec::new(),
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
            while self.cell_segments.get(cell as usize).len() >= max_segments_per_cell as usize {
                let victim = self.least_useful_segment(cell);
                self.destroy_segment(victim);
            }
        }
        let segment = match self.free_segments.pop() {
            Some(id) => {
                self.segment_cell[id as usize] = cell;
                self.segment_connected[id as usize] = 0;
                debug_assert!(self.segment_synapses[id as usize].is_empty());
                debug_assert!(self.segment_links[id as usize].is_empty());
                id
            }
            None => {
                let id = self.segment_cell.len() as u32;
                assert!(id < CONNECTED_FLAG, "too many segments");
                self.segment_cell.push(cell);
                self.segment_synapses.push(Vec::new());
                self.segment_links.push(Vec::new());
                self.segment_connected.push(0);
                id
            }
        };
        self.cell_segments.push(cell as usize, segment);
        segment
    }

    /// The segment of `cell` with the smallest Σ permanence² (f32 sum in
    /// synapse order); ties go to the smaller segment id.
    fn least_useful_segment(&self, cell: u32) -> u32 {
        let mut best: Option<(f32, u32)> = None;
        for &segment in self.cell_segments.get(cell as usize) {
            let score: f32 = self.segment_links[segment as usize]
                .iter()
                .map(|link| link.permanence * link.permanence)
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
        let existing = self.segment_links[segment as usize]
            .iter()
            .position(|link| link.presyn == presynaptic_cell);
        if let Some(at) = existing {
            if permanence > self.segment_links[segment as usize][at].permanence {
                self.update_permanence(segment, at, permanence);
            }
            return self.segment_synapses[segment as usize][at];
        }

        let permanence = permanence.clamp(0.0, 1.0);
        let synapse = match self.free_synapses.pop() {
            Some(id) => {
                let i = id as usize;
                self.synapses[i] = Synapse {
                    presyn: presynaptic_cell,
                    segment,
                    permanence,
                    slot: 0,
                };
                id
            }
            None => {
                let id = self.synapses.len() as u32;
                self.synapses.push(Synapse {
                    presyn: presynaptic_cell,
                    segment,
                    permanence,
                    slot: 0,
                });
                id
            }
        };
        let ids = &mut self.segment_synapses[segment as usize];
        let links = &mut self.segment_links[segment as usize];
        let before =
            list_bytes(std::slice::from_ref(ids)) + list_bytes(std::slice::from_ref(links));
        ids.push(synapse);
        links.push(Link {
            presyn: presynaptic_cell,
            permanence,
        });
        self.segment_list_bytes += list_bytes(std::slice::from_ref(ids))
            + list_bytes(std::slice::from_ref(links))
            - before;
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
        let segment = self.synapses[i].segment;
        assert!(segment != DEAD, "synapse {synapse} destroyed twice");
        let list = &mut self.segment_synapses[segment as usize];
        let at = list
            .iter()
            .position(|&s| s == synapse)
            .expect("synapse missing from its segment");
        list.swap_remove(at);
        let permanence = self.segment_links[segment as usize]
            .swap_remove(at)
            .permanence;
        self.index_remove(synapse);
        if permanence >= self.connected_threshold {
            self.segment_connected[segment as usize] -= 1;
        }
        self.synapses[i].permanence = permanence;
        self.synapses[i].segment = DEAD;
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
        let at = self
            .cell_segments
            .get(cell as usize)
            .iter()
            .position(|&s| s == segment)
            .expect("segment missing from its cell");
        self.cell_segments.remove(cell as usize, at);
        self.segment_cell[segment as usize] = DEAD;
        self.free_segments.push(segment);
    }

    // ------------------------------------------------------------ permanences

    /// Set the permanence of the `at`-th synapse of `segment` to
    /// `permanence` clamped to `[0, 1]`, moving it between the connected and
    /// unconnected index when its status flips.
    #[inline]
    fn update_permanence(&mut self, segment: u32, at: usize, permanence: f32) {
        let link = &mut self.segment_links[segment as usize][at];
        let old = link.permanence;
        let permanence = permanence.clamp(0.0, 1.0);
        link.permanence = permanence;
        let synapse = self.segment_synapses[segment as usize][at];
        self.note_permanence_change(synapse, old, permanence);
    }

    /// After the permanence of `synapse` changed from `old` to `permanence`
    /// (already clamped and in the segment's [`Link`]): flip its connected
    /// flag and count when it crossed the threshold. Only then is the
    /// synapse record read.
    #[inline(always)]
    fn note_permanence_change(&mut self, synapse: u32, old: f32, permanence: f32) {
        if (old >= self.connected_threshold) != (permanence >= self.connected_threshold) {
            self.flip_connected(synapse);
        }
    }

    /// `synapse` (live) crossed the connected threshold, in the direction
    /// its segment's [`Link`] already holds: flip its fanout flag and its
    /// segment's connected count.
    #[inline(always)]
    fn flip_connected(&mut self, synapse: u32) {
        let record = self.synapses[synapse as usize];
        let segment = record.segment as usize;
        let entry = &mut self.fanout.get_mut(record.presyn as usize)[record.slot as usize];
        debug_assert_eq!(entry.synapse, synapse);
        entry.tagged ^= CONNECTED_FLAG;
        if entry.tagged & CONNECTED_FLAG != 0 {
            self.segment_connected[segment] += 1;
        } else {
            self.segment_connected[segment] -= 1;
        }
    }

    /// The fanout entry of live `synapse`.
    fn fanout_entry(&self, synapse: u32) -> &Fanout {
        let record = self.synapses[synapse as usize];
        &self.fanout.get(record.presyn as usize)[record.slot as usize]
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
        let mut crossed = std::mem::take(&mut self.crossed);
        crossed.clear();
        // The lists are borrowed out (no copy) while the permanences change;
        // nothing below touches `segment_synapses` or `segment_links` until
        // they are back.
        let synapses = std::mem::take(&mut self.segment_synapses[segment as usize]);
        let mut links = std::mem::take(&mut self.segment_links[segment as usize]);
        for (link, &synapse) in links.iter_mut().zip(&synapses) {
            let Link { presyn, permanence } = *link;
            let delta = if is_active(presyn) {
                increment
            } else {
                -decrement
            };
            if prune && permanence + delta < PERMANENCE_EPSILON {
                doomed.push(synapse);
            } else {
                let updated = (permanence + delta).clamp(0.0, 1.0);
                link.permanence = updated;
                if (permanence >= self.connected_threshold) != (updated >= self.connected_threshold)
                {
                    // Flipped after the walk, once what the flip reads (the
                    // record, then the fanout list) is on its way.
                    prefetch::item(&self.synapses[synapse as usize]);
                    prefetch::item(&self.fanout.heads[presyn as usize]);
                    crossed.push(synapse);
                }
            }
        }
        self.segment_synapses[segment as usize] = synapses;
        self.segment_links[segment as usize] = links;
        for (k, &synapse) in crossed.iter().enumerate() {
            if let Some(&next) = crossed.get(k + 1) {
                prefetch::item(self.fanout_entry(next));
            }
            self.flip_connected(synapse);
        }
        self.crossed = crossed;
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
        let links = &self.segment_links[segment as usize];
        if k == 0 || links.is_empty() || self.segment_connected[segment as usize] >= k {
            return;
        }
        let mut perms = std::mem::take(&mut self.scratch);
        perms.clear();
        // The scratch buffer holds f32 bit patterns; compare them as floats.
        perms.extend(links.iter().map(|link| link.permanence.to_bits()));
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
        for at in 0..self.segment_links[segment as usize].len() {
            let permanence = self.segment_links[segment as usize][at].permanence;
            self.update_permanence(segment, at, permanence + delta);
        }
    }

    /// Destroy the `n` weakest synapses of `segment` whose presynaptic cell
    /// is not in `exclude` (sorted ascending): ordered by permanence, ties to
    /// the smaller synapse id.
    pub fn destroy_min_permanence_synapses(&mut self, segment: u32, n: usize, exclude: &[u32]) {
        // Positions in the segment first (so ranking reads the segment's
        // links, not the scattered records), turned into synapse ids before
        // any is destroyed.
        let mut doomed = std::mem::take(&mut self.scratch);
        doomed.clear();
        let links = &self.segment_links[segment as usize];
        let ids = &self.segment_synapses[segment as usize];
        doomed.extend(
            (0..links.len() as u32)
                .filter(|&at| exclude.binary_search(&links[at as usize].presyn).is_err()),
        );
        doomed.sort_unstable_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            links[a]
                .permanence
                .partial_cmp(&links[b].permanence)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(ids[a].cmp(&ids[b]))
        });
        doomed.truncate(n);
        for at in doomed.iter_mut() {
            *at = ids[*at as usize];
        }
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
    /// into [`SegmentActivity::potential`]; list the segments with at least
    /// `reach_threshold` (taken as 1 if 0) of them in
    /// [`SegmentActivity::reached`]. Work is proportional to the synapses fed
    /// by the active cells, plus zeroing 8 bytes per segment id.
    pub fn compute_activity(
        &self,
        active_presynaptic: &[u32],
        reach_threshold: u32,
        activity: &mut SegmentActivity,
    ) {
        activity.reset(self.segment_cell.len(), reach_threshold);
        let lists = self.fanout.num_lists();
        // Two stages ahead: a list's head, then (once the head is cached)
        // its items, so the misses of several cells overlap.
        for (i, &cell) in active_presynaptic.iter().enumerate() {
            if let Some(&ahead) = active_presynaptic.get(i + 8) {
                if (ahead as usize) < lists {
                    prefetch::item(&self.fanout.heads[ahead as usize]);
                }
            }
            if let Some(&ahead) = active_presynaptic.get(i + 4) {
                if (ahead as usize) < lists {
                    prefetch::slice(self.fanout.get(ahead as usize));
                }
            }
            if (cell as usize) < lists {
                activity.count_all(self.fanout.get(cell as usize));
            }
        }
    }

    /// Start loading what reinforcing `segments` reads (their owner and
    /// their synapse lists; see [`prefetch`]): the lists' headers for all
    /// of them first, then the lists, so the misses overlap.
    pub fn prefetch_segments(&self, segments: &[u32]) {
        for &segment in segments {
            let s = segment as usize;
            prefetch::item(&self.segment_cell[s]);
            prefetch::item(&self.segment_synapses[s]);
            prefetch::item(&self.segment_links[s]);
        }
        for &segment in segments {
            let s = segment as usize;
            prefetch::slice(&self.segment_synapses[s]);
            prefetch::slice(&self.segment_links[s]);
        }
    }

    // -------------------------------------------------------------- accessors

    /// The live segments of `cell`, in creation order.
    pub fn segments_for_cell(&self, cell: u32) -> &[u32] {
        self.cell_segments.get(cell as usize)
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
        self.synapses[synapse as usize].segment
    }

    /// Whether `segment` is a live id.
    pub fn segment_exists(&self, segment: u32) -> bool {
        self.segment_cell
            .get(segment as usize)
            .is_some_and(|&c| c != DEAD)
    }

    /// The permanence of `synapse` (a live one: found in its segment's
    /// links, a walk over the segment).
    pub fn permanence(&self, synapse: u32) -> f32 {
        let segment = self.synapses[synapse as usize].segment as usize;
        let at = self.segment_synapses[segment]
            .iter()
            .position(|&s| s == synapse)
            .expect("synapse missing from its segment");
        self.segment_links[segment][at].permanence
    }

    /// `synapse`'s record as a checkpoint holds it: a live synapse with the
    /// permanence of its link, a destroyed one as it was left.
    fn stored_synapse(&self, id: u32, synapse: Synapse) -> Synapse {
        if synapse.segment == DEAD {
            synapse
        } else {
            Synapse {
                permanence: self.permanence(id),
                ..synapse
            }
        }
    }

    /// The presynaptic cell of `synapse`.
    pub fn presynaptic_cell(&self, synapse: u32) -> u32 {
        self.synapses[synapse as usize].presyn
    }

    /// Whether `synapse` is connected.
    pub fn is_connected(&self, synapse: u32) -> bool {
        self.permanence(synapse) >= self.connected_threshold
    }

    /// Number of live segments.
    pub fn num_segments(&self) -> usize {
        self.segment_cell.len() - self.free_segments.len()
    }

    /// Number of live synapses.
    pub fn num_synapses(&self) -> usize {
        self.synapses.len() - self.free_synapses.len()
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
        size_of::<Vec<u32>>() * self.segment_synapses.capacity()
            + size_of::<Vec<Link>>() * self.segment_links.capacity()
            + self.segment_list_bytes
            + self.cell_segments.memory_bytes()
            + self.fanout.memory_bytes()
            + 4 * (self.segment_cell.capacity()
                + self.segment_connected.capacity()
                + self.free_segments.capacity()
                + 4 * self.synapses.capacity()
                + self.free_synapses.capacity()
                + self.scratch.capacity()
                + self.crossed.capacity()
                + self.candidates.capacity())
    }

    // ---------------------------------------------------------- reverse index

    fn index_insert(&mut self, synapse: u32, connected: bool) {
        let presyn = self.synapses[synapse as usize].presyn as usize;
        self.fanout.ensure_lists(presyn + 1);
        self.synapses[synapse as usize].slot = self.fanout.get(presyn).len() as u32;
        let flag = if connected { CONNECTED_FLAG } else { 0 };
        self.fanout.push(
            presyn,
            Fanout {
                tagged: self.synapses[synapse as usize].segment | flag,
                synapse,
            },
        );
    }

    fn index_remove(&mut self, synapse: u32) {
        let presyn = self.synapses[synapse as usize].presyn as usize;
        let slot = self.synapses[synapse as usize].slot as usize;
        debug_assert_eq!(self.fanout.get(presyn)[slot].synapse, synapse);
        self.fanout.swap_remove(presyn, slot);
        if let Some(moved) = self.fanout.get(presyn).get(slot) {
            self.synapses[moved.synapse as usize].slot = slot as u32;
        }
    }
}

#[cfg(test)]
impl Connections {
    /// Check every redundant piece of bookkeeping against the primary data;
    /// panics with a description of the first inconsistency.
    pub(crate) fn check_invariants(&self) {
        let mut live_synapses = 0;
        for cell in 0..self.cell_segments.num_lists() {
            for &segment in self.cell_segments.get(cell) {
                assert_eq!(self.segment_cell[segment as usize], cell as u32);
            }
        }
        for (segment, &cell) in self.segment_cell.iter().enumerate() {
            let synapses = &self.segment_synapses[segment];
            if cell == DEAD {
                assert!(synapses.is_empty(), "dead segment {segment} holds synapses");
                assert!(self.segment_links[segment].is_empty());
                assert!(self.free_segments.contains(&(segment as u32)));
                continue;
            }
            let mut connected = 0;
            let mut presyns: Vec<u32> = Vec::new();
            let links = &self.segment_links[segment];
            assert_eq!(links.len(), synapses.len(), "links of {segment}");
            for (&synapse, link) in synapses.iter().zip(links) {
                let record = self.synapses[synapse as usize];
                assert_eq!(link.presyn, record.presyn, "link of synapse {synapse}");
                live_synapses += 1;
                let s = synapse as usize;
                assert_eq!(self.synapses[s].segment, segment as u32);
                let p = link.permanence;
                assert!((0.0..=1.0).contains(&p), "permanence {p} out of range");
                if self.is_connected(synapse) {
                    connected += 1;
                }
                let list = self.fanout.get(self.synapses[s].presyn as usize);
                let entry = list[self.synapses[s].slot as usize];
                assert_eq!(entry.synapse, synapse);
                assert_eq!(entry.segment(), segment as u32);
                assert_eq!(entry.connected(), self.is_connected(synapse));
                presyns.push(self.synapses[s].presyn);
            }
            assert_eq!(self.segment_connected[segment], connected);
            presyns.sort_unstable();
            let n = presyns.len();
            presyns.dedup();
            assert_eq!(presyns.len(), n, "duplicate presynaptic cell on {segment}");
        }
        assert_eq!(
            self.segment_list_bytes,
            list_bytes(&self.segment_synapses) + list_bytes(&self.segment_links),
            "segment list bytes"
        );
        let indexed = self.fanout.total_len();
        assert_eq!(indexed, live_synapses);
        assert_eq!(self.num_synapses(), live_synapses);
        for &synapse in &self.free_synapses {
            assert_eq!(self.synapses[synapse as usize].segment, DEAD);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A store with one segment on `cell` holding synapses from `presyns`
    /// with the given permanences.
    fn with_segment(cell: u32, synapses: &[(u32, f32)]) -> (Connections, u32) {
        let mut c = Connections::new(32, 0.5);
        let seg = c.create_segment(cell, 0);
        for &(presyn, perm) in synapses {
            c.create_synapse(seg, presyn, perm);
        }
        (c, seg)
    }

    fn perms_by_presyn(c: &Connections, seg: u32) -> Vec<(u32, f32)> {
        let mut v: Vec<(u32, f32)> = c
            .synapses_for_segment(seg)
            .iter()
            .map(|&s| (c.presynaptic_cell(s), c.permanence(s)))
            .collect();
        v.sort_by_key(|&(p, _)| p);
        v
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn ids_are_appended_then_recycled_last_in_first_out() {
        let mut c = Connections::new(10, 0.5);
        let s: Vec<u32> = (0..4).map(|cell| c.create_segment(cell, 0)).collect();
        assert_eq!(s, vec![0, 1, 2, 3]);
        c.destroy_segment(1);
        c.destroy_segment(3);
        assert_eq!(c.num_segments(), 2);
        // Most recently destroyed first, then fresh ids.
        assert_eq!(c.create_segment(7, 0), 3);
        assert_eq!(c.create_segment(7, 0), 1);
        assert_eq!(c.create_segment(7, 0), 4);
        assert_eq!(c.segments_for_cell(7), &[3, 1, 4]);
        assert_eq!(c.cell_for_segment(1), 7);

        let syn: Vec<u32> = (0..3).map(|p| c.create_synapse(0, p, 0.3)).collect();
        assert_eq!(syn, vec![0, 1, 2]);
        c.destroy_synapse(0);
        c.destroy_synapse(2);
        assert_eq!(c.create_synapse(4, 9, 0.3), 2);
        assert_eq!(c.create_synapse(4, 8, 0.3), 0);
        assert_eq!(c.create_synapse(4, 7, 0.3), 3);
        c.check_invariants();
    }

    #[test]
    fn a_segment_never_gets_two_synapses_from_one_cell() {
        let (mut c, seg) = with_segment(0, &[(5, 0.3)]);
        let first = c.synapses_for_segment(seg)[0];
        // A lower permanence leaves the synapse alone.
        assert_eq!(c.create_synapse(seg, 5, 0.2), first);
        assert!(close(c.permanence(first), 0.3));
        assert_eq!(c.num_connected(seg), 0);
        // A higher one raises it, and the connected count follows.
        assert_eq!(c.create_synapse(seg, 5, 0.6), first);
        assert!(close(c.permanence(first), 0.6));
        assert_eq!(c.num_connected(seg), 1);
        assert_eq!(c.synapses_for_segment(seg).len(), 1);
        assert_eq!(c.num_synapses(), 1);
        c.check_invariants();
    }

    #[test]
    fn a_checkpoint_holds_the_adapted_permanences_and_reloads_them() {
        let (mut c, seg) = with_segment(0, &[(10, 0.45), (11, 0.3), (12, 0.05)]);
        // 10 crosses the threshold, 12 is pruned (its record keeps 0.05).
        c.adapt_segment(seg, |p| p == 10, 0.1, 0.1, true, 1);
        let json = serde_json::to_string(&c).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&json).unwrap();
        let records: Vec<f32> = stored["synapses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["permanence"].as_f64().unwrap() as f32)
            .collect();
        assert_eq!(records, [0.45f32 + 0.1, 0.3f32 - 0.1, 0.05f32]);
        let restored: Connections = serde_json::from_str(&json).unwrap();
        restored.check_invariants();
        assert_eq!(perms_by_presyn(&restored, seg), perms_by_presyn(&c, seg));
        assert_eq!(restored.num_connected(seg), 1);
        assert_eq!(serde_json::to_string(&restored).unwrap(), json);
    }

    #[test]
    fn destroying_a_synapse_moves_the_last_one_into_its_slot() {
        let (mut c, seg) = with_segment(0, &[(10, 0.1), (11, 0.2), (12, 0.3), (13, 0.4)]);
        assert_eq!(c.synapses_for_segment(seg), &[0, 1, 2, 3]);
        c.destroy_synapse(1);
        assert_eq!(c.synapses_for_segment(seg), &[0, 3, 2]);
        c.destroy_synapse(0);
        assert_eq!(c.synapses_for_segment(seg), &[2, 3]);
        c.check_invariants();
    }

    #[test]
    fn destroying_a_segment_keeps_the_cell_order_and_frees_synapses_last_first() {
        let mut c = Connections::new(4, 0.5);
        let segs: Vec<u32> = (0..3).map(|_| c.create_segment(2, 0)).collect();
        for p in 0..3 {
            c.create_synapse(segs[1], p, 0.6);
        }
        c.create_synapse(segs[2], 3, 0.6);
        c.destroy_segment(segs[1]);
        assert_eq!(c.segments_for_cell(2), &[segs[0], segs[2]]);
        assert_eq!(c.num_synapses(), 1);
        assert_eq!(c.num_segments(), 2);
        // Synapses 2, 1, 0 were destroyed in that order: 0 comes back first.
        let s = c.create_synapse(segs[0], 7, 0.1);
        assert_eq!(s, 0);
        assert!(!c.segment_exists(segs[1]));
        c.check_invariants();
    }

    #[test]
    fn activity_counts_connected_and_potential_synapses_of_active_inputs() {
        let mut c = Connections::new(8, 0.5);
        let a = c.create_segment(0, 0);
        let b = c.create_segment(1, 0);
        let idle = c.create_segment(2, 0);
        // a: inputs 10, 11 connected, 12 not. b: 10 not, 13 connected (just).
        c.create_synapse(a, 10, 0.5);
        c.create_synapse(a, 11, 0.9);
        c.create_synapse(a, 12, 0.49);
        c.create_synapse(b, 10, 0.2);
        c.create_synapse(b, 13, 0.5 - PERMANENCE_EPSILON);
        c.create_synapse(idle, 20, 0.9);
        let mut act = SegmentActivity::default();
        c.compute_activity(&[10, 11, 12, 13, 99], 3, &mut act);
        assert_eq!((act.connected(a), act.potential(a)), (2, 3));
        assert_eq!((act.connected(b), act.potential(b)), (1, 2));
        assert_eq!((act.connected(idle), act.potential(idle)), (0, 0));
        // Only `a` has 3 active synapses.
        assert_eq!(act.reached(), &[a]);

        // The next computation starts from zero.
        c.compute_activity(&[13], 1, &mut act);
        assert_eq!((act.connected(a), act.potential(a)), (0, 0));
        assert_eq!((act.connected(b), act.potential(b)), (1, 1));
        assert_eq!(act.reached(), &[b]);
    }

    #[test]
    fn activity_counts_when_every_segment_is_touched_many_times() {
        // One segment fed by many active cells: every entry after the first
        // lands on an already-counted segment.
        let mut c = Connections::new(4, 0.5);
        let seg = c.create_segment(0, 0);
        for input in 0..6 {
            c.create_synapse(seg, 100 + input, if input % 2 == 0 { 0.7 } else { 0.1 });
        }
        let mut act = SegmentActivity::default();
        c.compute_activity(&[100, 101, 102, 103, 104, 105], 4, &mut act);
        assert_eq!((act.connected(seg), act.potential(seg)), (3, 6));
        // Listed once, when its count reached 4, not again at 5 and 6.
        assert_eq!(act.reached(), &[seg]);
    }

    #[test]
    fn adapt_reinforces_active_weakens_inactive_and_prunes() {
        let (mut c, seg) = with_segment(0, &[(1, 0.45), (2, 0.5), (3, 0.05), (4, 0.95)]);
        let active = |p: u32| p == 1 || p == 4;
        c.adapt_segment(seg, active, 0.1, 0.1, true, 1);
        // 3 would drop to -0.05 and is pruned; 4 clamps at 1.
        let got = perms_by_presyn(&c, seg);
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert!(close(got[0].1, 0.55) && close(got[1].1, 0.4) && got[2].1 == 1.0);
        assert_eq!(c.num_connected(seg), 2);
        c.check_invariants();

        // Without pruning the weak synapse would stay at 0.
        let (mut c, seg) = with_segment(0, &[(3, 0.05)]);
        c.adapt_segment(seg, |_| false, 0.1, 0.1, false, 5);
        assert_eq!(c.permanence(c.synapses_for_segment(seg)[0]), 0.0);
        assert!(c.segment_exists(seg));
    }

    #[test]
    fn adapt_destroys_a_segment_left_with_too_few_synapses() {
        let (mut c, seg) = with_segment(3, &[(1, 0.05), (2, 0.05), (5, 0.5)]);
        c.adapt_segment(seg, |p| p == 5, 0.1, 0.1, true, 2);
        assert!(!c.segment_exists(seg));
        assert!(c.segments_for_cell(3).is_empty());
        assert_eq!((c.num_segments(), c.num_synapses()), (0, 0));
        c.check_invariants();
    }

    #[test]
    fn raise_to_threshold_connects_the_k_strongest() {
        let (mut c, seg) = with_segment(0, &[(1, 0.1), (2, 0.3), (3, 0.2), (4, 0.6)]);
        c.raise_permanences_to_threshold(seg, 3);
        // 3rd largest is 0.2: every synapse gains 0.5 - 1e-6 - 0.2.
        assert_eq!(c.num_connected(seg), 3);
        let got = perms_by_presyn(&c, seg);
        let gap = 0.5 - PERMANENCE_EPSILON - 0.2;
        assert!(close(got[0].1, 0.1 + gap) && close(got[1].1, 0.3 + gap));
        assert!(close(got[3].1, 0.6 + gap));
        c.check_invariants();

        // Already enough connected, k = 0, or k past the end: clipped / no-op.
        let before = perms_by_presyn(&c, seg);
        c.raise_permanences_to_threshold(seg, 2);
        c.raise_permanences_to_threshold(seg, 0);
        assert_eq!(perms_by_presyn(&c, seg), before);
        c.raise_permanences_to_threshold(seg, 10);
        assert_eq!(c.num_connected(seg), 4);
    }

    #[test]
    fn bump_moves_every_synapse_and_clamps() {
        let (mut c, seg) = with_segment(0, &[(1, 0.45), (2, 0.02), (3, 0.98)]);
        c.bump_segment(seg, 0.05);
        let got = perms_by_presyn(&c, seg);
        assert!(close(got[0].1, 0.5) && close(got[1].1, 0.07) && got[2].1 == 1.0);
        assert_eq!(c.num_connected(seg), 2);
        c.bump_segment(seg, -0.1);
        let got = perms_by_presyn(&c, seg);
        assert!(got[1].1 == 0.0 && close(got[0].1, 0.4));
        assert_eq!(c.num_connected(seg), 1);
        c.check_invariants();
    }

    #[test]
    fn destroy_min_permanence_skips_excluded_cells_and_breaks_ties_by_id() {
        let (mut c, seg) = with_segment(0, &[(1, 0.3), (2, 0.1), (3, 0.2), (4, 0.2), (5, 0.05)]);
        // Cell 5 (the weakest) is excluded; the next are 2 (0.1) then the 0.2
        // tie, won by the smaller synapse id (cell 3's).
        c.destroy_min_permanence_synapses(seg, 2, &[5]);
        let presyns: Vec<u32> = perms_by_presyn(&c, seg).iter().map(|x| x.0).collect();
        assert_eq!(presyns, vec![1, 4, 5]);
        c.destroy_min_permanence_synapses(seg, 1, &[]);
        let presyns: Vec<u32> = perms_by_presyn(&c, seg).iter().map(|x| x.0).collect();
        assert_eq!(presyns, vec![1, 4]);
        c.destroy_min_permanence_synapses(seg, 10, &[1, 4]);
        assert_eq!(c.synapses_for_segment(seg).len(), 2);
        c.check_invariants();
    }

    #[test]
    fn grow_takes_all_candidates_in_order_when_all_are_wanted() {
        let (mut c, seg) = with_segment(0, &[(3, 0.05)]);
        let mut rng = Random::new(1);
        let untouched = rng.clone();
        c.grow_synapses(seg, &[1, 3, 5, 7], 0.21, &mut rng, 0, 0);
        // 3 existed: raised to 0.21, and growth still stops at 4 synapses.
        assert_eq!(rng, untouched, "no shuffle when every candidate is used");
        let got = perms_by_presyn(&c, seg);
        assert_eq!(
            got.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![1, 3, 5, 7]
        );
        assert!(got.iter().all(|&(_, p)| close(p, 0.21)));
        c.check_invariants();
    }

    #[test]
    fn grow_samples_a_shuffled_subset_when_fewer_are_wanted() {
        let (mut c, seg) = with_segment(0, &[]);
        let mut rng = Random::new(1);
        let candidates: Vec<u32> = (0..10).collect();
        c.grow_synapses(seg, &candidates, 0.21, &mut rng, 4, 0);
        // The first four of the same shuffle (htm Random(1) sample = [0, 8, 2, 7]).
        let mut expect = Random::new(1).sample(&candidates, 4);
        expect.sort_unstable();
        let got: Vec<u32> = perms_by_presyn(&c, seg).iter().map(|x| x.0).collect();
        assert_eq!(got, expect);
        assert_eq!(got, vec![0, 2, 7, 8]);
    }

    #[test]
    fn grow_recycles_the_weakest_non_candidates_past_the_segment_limit() {
        let (mut c, seg) = with_segment(0, &[(20, 0.3), (21, 0.1), (22, 0.2), (1, 0.01)]);
        let mut rng = Random::new(7);
        // Want 3 new on a segment of 4 with room for 5: overrun 2. Cell 1 is a
        // candidate, so its weak synapse is protected; 21 and 22 go.
        c.grow_synapses(seg, &[1, 2, 3], 0.21, &mut rng, 0, 5);
        let got: Vec<u32> = perms_by_presyn(&c, seg).iter().map(|x| x.0).collect();
        assert_eq!(got, vec![1, 2, 3, 20]);
        assert!(c.synapses_for_segment(seg).len() <= 5);
        c.check_invariants();

        // At the limit with only candidates on it: nothing can be destroyed,
        // nothing is grown.
        let (mut c, seg) = with_segment(0, &[(1, 0.3), (2, 0.3)]);
        c.grow_synapses(seg, &[1, 2, 3], 0.21, &mut rng, 0, 2);
        assert_eq!(c.synapses_for_segment(seg).len(), 2);
    }

    #[test]
    fn a_full_cell_evicts_its_least_useful_segment() {
        let mut c = Connections::new(4, 0.5);
        let strong = c.create_segment(0, 2);
        c.create_synapse(strong, 1, 0.9);
        let weak = c.create_segment(0, 2);
        c.create_synapse(weak, 1, 0.3);
        c.create_synapse(weak, 2, 0.3);
        // Σp² = 0.81 vs 0.18: the weak one goes, its id is reused.
        let fresh = c.create_segment(0, 2);
        assert_eq!(fresh, weak);
        assert_eq!(c.segments_for_cell(0), &[strong, fresh]);
        assert!(c.synapses_for_segment(fresh).is_empty());
        // Now `fresh` has Σp² = 0: evicted next, even though it is newer.
        let again = c.create_segment(0, 2);
        assert_eq!(again, fresh);
        assert_eq!(c.segments_for_cell(0), &[strong, again]);
        // Equal sums: the smaller id goes.
        let mut c = Connections::new(4, 0.5);
        let x = c.create_segment(1, 2);
        let y = c.create_segment(1, 2);
        c.destroy_segment(x);
        let x2 = c.create_segment(1, 2); // reuses id 0, now after y in the list
        assert_eq!((x2, c.segments_for_cell(1)), (0, &[y, 0][..]));
        c.create_segment(1, 2);
        assert_eq!(c.segments_for_cell(1), &[y, 0]);
        assert_eq!(c.num_segments(), 2);
        c.check_invariants();
    }

    #[test]
    fn counts_follow_creation_and_destruction() {
        let mut c = Connections::new(8, 0.5);
        let a = c.create_segment(0, 0);
        let b = c.create_segment(0, 0);
        for p in 0..5 {
            c.create_synapse(a, p, 0.6);
            c.create_synapse(b, p, 0.1);
        }
        assert_eq!((c.num_segments(), c.num_synapses()), (2, 10));
        assert_eq!((c.num_connected(a), c.num_connected(b)), (5, 0));
        c.destroy_synapse(c.synapses_for_segment(a)[0]);
        assert_eq!((c.num_synapses(), c.num_connected(a)), (9, 4));
        c.destroy_segment(b);
        assert_eq!((c.num_segments(), c.num_synapses()), (1, 4));
        assert!(c.memory_bytes() > 0);
        c.check_invariants();
    }

    proptest! {
        #[test]
        fn list_pool_behaves_like_vecs(
            ops in proptest::collection::vec((0usize..5, 0u8..3, any::<u16>()), 0..300),
        ) {
            let mut pool = ListPool::<u32>::with_lists(3);
            let mut model: Vec<Vec<u32>> = vec![Vec::new(); 3];
            for (list, kind, x) in ops {
                pool.ensure_lists(list + 1);
                if model.len() <= list {
                    model.resize(list + 1, Vec::new());
                }
                let len = model[list].len();
                match kind {
                    0 => {
                        pool.push(list, u32::from(x));
                        model[list].push(u32::from(x));
                    }
                    1 if len > 0 => {
                        pool.swap_remove(list, x as usize % len);
                        model[list].swap_remove(x as usize % len);
                    }
                    2 if len > 0 => {
                        pool.remove(list, x as usize % len);
                        model[list].remove(x as usize % len);
                    }
                    _ => {}
                }
                for (i, v) in model.iter().enumerate() {
                    prop_assert_eq!(pool.get(i), v.as_slice());
                }
            }
            prop_assert_eq!(pool.total_len(), model.iter().map(Vec::len).sum::<usize>());
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Segment(u32),
        Synapse(usize, u32, f32),
        DestroySegment(usize),
        DestroySynapse(usize),
        Adapt(usize, u32, bool),
        Bump(usize, f32),
        Raise(usize, u32),
        Grow(usize, u32, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..6).prop_map(Op::Segment),
            (any::<usize>(), 0u32..12, 0.0f32..1.0).prop_map(|(a, b, c)| Op::Synapse(a, b, c)),
            any::<usize>().prop_map(Op::DestroySegment),
            any::<usize>().prop_map(Op::DestroySynapse),
            (any::<usize>(), any::<u32>(), any::<bool>()).prop_map(|(a, b, c)| Op::Adapt(a, b, c)),
            (any::<usize>(), -0.5f32..0.5).prop_map(|(a, b)| Op::Bump(a, b)),
            (any::<usize>(), 0u32..6).prop_map(|(a, b)| Op::Raise(a, b)),
            (any::<usize>(), 0u32..5, 0u32..6).prop_map(|(a, b, c)| Op::Grow(a, b, c)),
        ]
    }

    proptest! {
        #[test]
        fn bookkeeping_and_activity_stay_consistent(
            ops in proptest::collection::vec(op(), 1..120),
            active in proptest::collection::btree_set(0u32..12, 0..12),
        ) {
            let mut c = Connections::new(6, 0.5);
            let mut rng = Random::new(3);
            let live_segments = |c: &Connections| -> Vec<u32> {
                (0..6).flat_map(|cell| c.segments_for_cell(cell).to_vec()).collect()
            };
            for op in ops {
                let segs = live_segments(&c);
                let pick = |i: usize| segs.get(i % segs.len().max(1)).copied();
                match op {
                    Op::Segment(cell) => { c.create_segment(cell, 3); }
                    Op::Synapse(i, p, perm) => if let Some(s) = pick(i) { c.create_synapse(s, p, perm); },
                    Op::DestroySegment(i) => if let Some(s) = pick(i) { c.destroy_segment(s); },
                    Op::DestroySynapse(i) => {
                        let all: Vec<u32> = segs.iter().flat_map(|&s| c.synapses_for_segment(s).to_vec()).collect();
                        if !all.is_empty() { c.destroy_synapse(all[i % all.len()]); }
                    }
                    Op::Adapt(i, mask, prune) => if let Some(s) = pick(i) {
                        c.adapt_segment(s, |p| mask >> p & 1 != 0, 0.1, 0.15, prune, 2);
                    },
                    Op::Bump(i, d) => if let Some(s) = pick(i) { c.bump_segment(s, d); },
                    Op::Raise(i, k) => if let Some(s) = pick(i) {
                        c.raise_permanences_to_threshold(s, k);
                        let n = c.synapses_for_segment(s).len() as u32;
                        prop_assert!(c.num_connected(s) >= k.min(n) || n == 0);
                    },
                    Op::Grow(i, max_new, limit) => if let Some(s) = pick(i) {
                        c.grow_synapses(s, &[1, 3, 4, 8, 11], 0.21, &mut rng, max_new, limit);
                        if limit > 0 { prop_assert!(c.synapses_for_segment(s).len() <= (limit as usize).max(5)); }
                    },
                }
                c.check_invariants();
            }
            // A copy keeps the invariants (its lists are shorter-capacity
            // copies, so its byte count is its own) and holds no more.
            let copy = c.clone();
            copy.check_invariants();
            prop_assert!(copy.memory_bytes() <= c.memory_bytes());
            // compute_activity agrees with a brute-force count.
            let active: Vec<u32> = active.into_iter().collect();
            let mut act = SegmentActivity::default();
            c.compute_activity(&active, 2, &mut act);
            let mut reached = act.reached().to_vec();
            reached.sort_unstable();
            let mut expected_reached = Vec::new();
            for s in live_segments(&c) {
                let syns = c.synapses_for_segment(s);
                let pot = syns.iter().filter(|&&y| active.contains(&c.presynaptic_cell(y))).count() as u32;
                let con = syns.iter().filter(|&&y| active.contains(&c.presynaptic_cell(y)) && c.is_connected(y)).count() as u32;
                prop_assert_eq!((act.connected(s), act.potential(s)), (con, pot));
                if pot >= 2 {
                    expected_reached.push(s);
                }
            }
            expected_reached.sort_unstable();
            prop_assert_eq!(reached, expected_reached);
        }
    }
}
