//! Temporal Memory: learns sequences of active columns and predicts the next.
//!
//! Every column holds `cells_per_column` cells; which cell of an active column
//! fires encodes the *context* the column's input arrived in. Each cell owns
//! dendrite segments (in [`Connections`]) whose synapses listen to cells that
//! were active one step earlier. A segment with enough active connected
//! synapses puts its cell in the *predictive* state. When a column becomes
//! active, its predicted cells fire alone; a column with no predicted cell
//! *bursts* (all its cells fire) and one winner cell learns the transition.
//! The fraction of active columns without a prediction is the raw anomaly.
//!
//! The algorithm follows htm.core (reference: `docs/htm-reference.md` §4,
//! pitfalls in §9), including its order of learning steps and random draws,
//! so a given seed gives the same cells as htm.core:
//!
//! 1. dendrites: count each segment's active synapses from the cells active
//!    at `t − 1`; *active* segments (connected count ≥ activation threshold)
//!    predict, *matching* segments (potential count ≥ min threshold) are the
//!    learning candidates; both sorted by (cell, segment id);
//! 2. raw anomaly of the active columns against the predicted columns;
//! 3. cells, walking the columns in ascending order: predicted-active columns
//!    activate and reinforce their predicting segments; unpredicted active
//!    columns burst and teach their best matching segment (or a new one on
//!    the least used cell); predicted but inactive columns optionally punish
//!    their matching segments.

use serde::{Deserialize, Serialize};

use super::anomaly::raw_anomaly;
use super::connections::{Connections, SegmentActivity};
use super::random::Random;
use super::sdr::Sdr;

/// Temporal Memory parameters; the defaults are htm.core's (§4.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemporalMemoryParams {
    /// Cells per column; cell id = column × cells_per_column + i.
    pub cells_per_column: u32,
    /// Active connected synapses for a segment to predict its cell.
    pub activation_threshold: u32,
    /// Permanence of newly grown synapses.
    pub initial_permanence: f32,
    /// Permanence at which a synapse counts as connected.
    pub connected_permanence: f32,
    /// Active synapses (any permanence) for a segment to be *matching*.
    pub min_threshold: u32,
    /// Target number of active synapses per segment to grow towards.
    pub max_new_synapse_count: u32,
    /// Reinforcement of synapses from previously active cells.
    pub permanence_increment: f32,
    /// Weakening of synapses from previously inactive cells.
    pub permanence_decrement: f32,
    /// Punishment of segments that matched but whose column stayed inactive
    /// (0 = off).
    pub predicted_segment_decrement: f32,
    /// Seed of the Temporal Memory's random generator.
    pub seed: u32,
    /// Segments per cell before the least useful one is evicted.
    pub max_segments_per_cell: u32,
    /// Synapses per segment before the weakest are recycled.
    pub max_synapses_per_segment: u32,
    /// Score the raw anomaly against the first-order prediction too when the
    /// Temporal Memory predicts fewer columns than this fraction of the last
    /// input's columns (0 = off, htm.core's behaviour; at most 1). The
    /// first-order prediction is what the last input's columns predict in
    /// any context, as if they had all burst. It covers a *dead end*: the
    /// last input was predicted in a context that has never been followed
    /// by anything, so the Temporal Memory predicts nothing and the next
    /// input scores 1.0 however familiar it is. NuPIC's backtracking TM
    /// re-searches its context in the same case (a prediction below half
    /// the input's size). Learning is unchanged.
    #[serde(deserialize_with = "crate::format_compat::added_in_format_4")]
    pub first_order_fallback: f32,
}

impl Default for TemporalMemoryParams {
    fn default() -> Self {
        Self {
            cells_per_column: 32,
            activation_threshold: 13,
            initial_permanence: 0.21,
            connected_permanence: 0.5,
            min_threshold: 10,
            max_new_synapse_count: 20,
            permanence_increment: 0.1,
            permanence_decrement: 0.1,
            predicted_segment_decrement: 0.0,
            seed: 42,
            max_segments_per_cell: 255,
            max_synapses_per_segment: 255,
            first_order_fallback: 0.0,
        }
    }
}

/// Why a Temporal Memory could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemporalMemoryError {
    /// A parameter is out of its valid range; `field` is its serde name.
    #[error("invalid temporal memory parameter `{field}`: {message}")]
    InvalidParameter {
        /// Serde name of the offending field (`num_columns` for the column
        /// count argument).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> TemporalMemoryError {
    TemporalMemoryError::InvalidParameter {
        field,
        message: message.into(),
    }
}

impl TemporalMemoryParams {
    /// Reject values that cannot describe a working Temporal Memory.
    pub fn validate(&self, num_columns: u32) -> Result<(), TemporalMemoryError> {
        if num_columns == 0 {
            return Err(invalid("num_columns", "must be at least 1"));
        }
        if self.cells_per_column == 0 {
            return Err(invalid("cells_per_column", "must be at least 1"));
        }
        if u64::from(num_columns) * u64::from(self.cells_per_column) >= u64::from(u32::MAX) {
            return Err(invalid(
                "cells_per_column",
                format!(
                    "{num_columns} columns × {} cells overflow u32 cell ids",
                    self.cells_per_column
                ),
            ));
        }
        if self.activation_threshold == 0 {
            return Err(invalid("activation_threshold", "must be at least 1"));
        }
        if self.min_threshold == 0 {
            return Err(invalid("min_threshold", "must be at least 1"));
        }
        if self.min_threshold > self.activation_threshold {
            return Err(invalid(
                "min_threshold",
                format!(
                    "{} exceeds activation_threshold {}: an active segment must also be matching",
                    self.min_threshold, self.activation_threshold
                ),
            ));
        }
        let unit = [
            ("initial_permanence", self.initial_permanence),
            ("connected_permanence", self.connected_permanence),
            ("permanence_increment", self.permanence_increment),
            ("permanence_decrement", self.permanence_decrement),
            (
                "predicted_segment_decrement",
                self.predicted_segment_decrement,
            ),
            ("first_order_fallback", self.first_order_fallback),
        ];
        for (field, value) in unit {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(field, format!("{value} is outside [0, 1]")));
            }
        }
        if self.max_new_synapse_count == 0 {
            return Err(invalid("max_new_synapse_count", "must be at least 1"));
        }
        if self.max_segments_per_cell == 0 {
            return Err(invalid("max_segments_per_cell", "must be at least 1"));
        }
        if self.max_synapses_per_segment == 0 {
            return Err(invalid("max_synapses_per_segment", "must be at least 1"));
        }
        Ok(())
    }
}

/// The Temporal Memory of one stream (§4).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TemporalMemory {
    params: TemporalMemoryParams,
    num_columns: u32,
    connections: Connections,
    rng: Random,
    /// Cells active after the last compute, sorted.
    active_cells: Vec<u32>,
    /// One learning cell per active column after the last compute, sorted.
    winner_cells: Vec<u32>,
    /// Columns that had a predictive cell going into the last compute.
    predicted_columns: Vec<u32>,
    /// Active columns without a prediction in the last compute.
    bursting_columns: usize,
    /// Raw anomaly of the last compute (−1 after `reset`).
    anomaly: f32,

    // Everything below is recomputed from the state above when needed, so it
    // is not serialized: after a restore the dendrites are simply computed
    // again, with the same result.
    /// Whether the fields below describe the current `active_cells`.
    #[serde(skip)]
    dendrites_valid: bool,
    /// Per-segment active synapse counts from `active_cells`.
    #[serde(skip)]
    activity: SegmentActivity,
    /// Segments predicting their cell, sorted by (cell, id).
    #[serde(skip)]
    active_segments: Vec<u32>,
    /// Segments close enough to learn, sorted by (cell, id).
    #[serde(skip)]
    matching_segments: Vec<u32>,
    /// Owners of the active segments, sorted.
    #[serde(skip)]
    predictive_cells: Vec<u32>,
    /// Scratch: the active cells of the previous step during learning.
    #[serde(skip)]
    prev_active: Vec<u32>,
    /// Scratch: the winner cells of the previous step during learning.
    #[serde(skip)]
    prev_winners: Vec<u32>,
    /// Scratch: `prev_active` as a bit set, for `adapt_segment`.
    #[serde(skip)]
    prev_active_mask: Vec<u64>,
    /// Scratch: (cell << 32 | segment) sort keys of the active and matching
    /// segments.
    #[serde(skip)]
    segment_keys: Vec<u64>,
    /// Scratch for the first-order fallback: every cell of the last input's
    /// columns, their segments' activity and the columns they predict.
    #[serde(skip)]
    first_order_cells: Vec<u32>,
    #[serde(skip)]
    first_order_activity: SegmentActivity,
    #[serde(skip)]
    first_order_columns: Vec<u32>,
}

impl TemporalMemory {
    /// A Temporal Memory over `num_columns` columns with no segments yet.
    pub fn new(
        num_columns: u32,
        params: TemporalMemoryParams,
    ) -> Result<Self, TemporalMemoryError> {
        params.validate(num_columns)?;
        let num_cells = num_columns * params.cells_per_column;
        Ok(Self {
            connections: Connections::new(num_cells, params.connected_permanence),
            rng: Random::new(params.seed),
            num_columns,
            params,
            active_cells: Vec::new(),
            winner_cells: Vec::new(),
            predicted_columns: Vec::new(),
            bursting_columns: 0,
            anomaly: 0.0,
            dendrites_valid: false,
            activity: SegmentActivity::default(),
            active_segments: Vec::new(),
            matching_segments: Vec::new(),
            predictive_cells: Vec::new(),
            prev_active: Vec::new(),
            prev_winners: Vec::new(),
            prev_active_mask: Vec::new(),
            segment_keys: Vec::new(),
            first_order_cells: Vec::new(),
            first_order_activity: SegmentActivity::default(),
            first_order_columns: Vec::new(),
        })
    }

    /// §4.2: activate dendrites (if not valid), raw anomaly vs predicted
    /// columns, activate cells (+ learning if `learn`). No allocation in
    /// steady state except when segments/synapses grow.
    ///
    /// # Panics
    /// If `active_columns` is not of size [`TemporalMemory::num_columns`].
    pub fn compute(&mut self, active_columns: &Sdr, learn: bool) {
        assert_eq!(
            active_columns.size(),
            self.num_columns,
            "active columns SDR has the wrong size"
        );
        self.activate_dendrites();

        let cpc = self.params.cells_per_column;
        self.predicted_columns.clear();
        self.predicted_columns
            .extend(columns_of(&self.predictive_cells, cpc));
        self.anomaly = if self.prediction_is_a_dead_end() {
            self.compute_first_order_prediction();
            raw_anomaly(active_columns.indices(), &self.first_order_columns)
        } else {
            raw_anomaly(active_columns.indices(), &self.predicted_columns)
        };

        self.activate_cells(active_columns.indices(), learn);
    }

    /// Whether the prediction going into this compute covers fewer columns
    /// than `first_order_fallback` of the last input's (never when off or
    /// when nothing was active).
    fn prediction_is_a_dead_end(&self) -> bool {
        let fraction = self.params.first_order_fallback;
        if fraction <= 0.0 || self.active_cells.is_empty() {
            return false;
        }
        let last_columns = columns_of(&self.active_cells, self.params.cells_per_column).count();
        (self.predicted_columns.len() as f32) < fraction * last_columns as f32
    }

    /// `first_order_columns` = the predicted columns plus the columns that
    /// the last input's columns predict with all their cells active.
    fn compute_first_order_prediction(&mut self) {
        let cpc = self.params.cells_per_column;
        self.first_order_cells.clear();
        for column in columns_of(&self.active_cells, cpc) {
            self.first_order_cells
                .extend(column * cpc..(column + 1) * cpc);
        }
        let activation = self.params.activation_threshold;
        let activity = &mut self.first_order_activity;
        self.connections
            .compute_activity(&self.first_order_cells, activation, activity);
        self.first_order_columns.clear();
        self.first_order_columns.extend(
            activity
                .reached()
                .iter()
                .filter(|&&segment| activity.connected(segment) >= activation)
                .map(|&segment| self.connections.cell_for_segment(segment) / cpc),
        );
        self.first_order_columns
            .extend_from_slice(&self.predicted_columns);
        self.first_order_columns.sort_unstable();
        self.first_order_columns.dedup();
    }

    /// §4.3: count active synapses per segment from the active cells and
    /// derive active segments, matching segments and predictive cells.
    fn activate_dendrites(&mut self) {
        if self.dendrites_valid {
            return;
        }
        let connections = &self.connections;
        let (activation, min) = (self.params.activation_threshold, self.params.min_threshold);
        // An active segment has at least `activation` active synapses, a
        // matching one at least `min`: only segments that reached the smaller
        // of the two can be either.
        connections.compute_activity(&self.active_cells, activation.min(min), &mut self.activity);
        let activity = &self.activity;
        // One sort of plain (cell, id) keys for the active and matching
        // segments together, then split.
        let keys = &mut self.segment_keys;
        keys.clear();
        keys.extend(
            activity
                .reached()
                .iter()
                .filter(|&&s| activity.connected(s) >= activation || activity.potential(s) >= min)
                .map(|&s| (u64::from(connections.cell_for_segment(s)) << 32) | u64::from(s)),
        );
        keys.sort_unstable();

        self.active_segments.clear();
        self.matching_segments.clear();
        self.predictive_cells.clear();
        for &key in keys.iter() {
            let (cell, segment) = ((key >> 32) as u32, key as u32);
            if activity.connected(segment) >= activation {
                self.active_segments.push(segment);
                if self.predictive_cells.last() != Some(&cell) {
                    self.predictive_cells.push(cell);
                }
            }
            if activity.potential(segment) >= min {
                self.matching_segments.push(segment);
            }
        }
        self.dendrites_valid = true;
    }

    /// §4.4: walk the active columns and the columns of active or matching
    /// segments in ascending order, choosing active and winner cells and
    /// learning.
    fn activate_cells(&mut self, active_columns: &[u32], learn: bool) {
        std::mem::swap(&mut self.active_cells, &mut self.prev_active);
        std::mem::swap(&mut self.winner_cells, &mut self.prev_winners);
        self.active_cells.clear();
        self.winner_cells.clear();

        let num_cells = self.num_cells() as usize;
        if learn {
            self.prev_active_mask.resize(num_cells.div_ceil(64), 0);
            for &cell in &self.prev_active {
                self.prev_active_mask[(cell >> 6) as usize] |= 1u64 << (cell & 63);
            }
        }

        let cpc = self.params.cells_per_column;
        let active_segments = std::mem::take(&mut self.active_segments);
        let matching_segments = std::mem::take(&mut self.matching_segments);
        if learn {
            self.connections.prefetch_segments(&active_segments);
        }
        let mut step = Step {
            params: &self.params,
            connections: &mut self.connections,
            rng: &mut self.rng,
            activity: &self.activity,
            prev_active_mask: &self.prev_active_mask,
            prev_winners: &self.prev_winners,
            active_cells: &mut self.active_cells,
            winner_cells: &mut self.winner_cells,
            learn,
        };

        let (mut ic, mut ia, mut im) = (0, 0, 0);
        let mut bursting = 0;
        loop {
            let col_of = |segs: &[u32], i: usize| {
                segs.get(i)
                    .map(|&s| step.connections.cell_for_segment(s) / cpc)
            };
            let next = earliest(
                earliest(
                    active_columns.get(ic).copied(),
                    col_of(&active_segments, ia),
                ),
                col_of(&matching_segments, im),
            );
            let Some(column) = next else { break };

            let a0 = ia;
            while col_of(&active_segments, ia) == Some(column) {
                ia += 1;
            }
            let m0 = im;
            while col_of(&matching_segments, im) == Some(column) {
                im += 1;
            }
            let column_active = active_columns.get(ic) == Some(&column);
            if column_active {
                ic += 1;
                if ia > a0 {
                    step.activate_predicted_column(&active_segments[a0..ia]);
                } else {
                    bursting += 1;
                    step.burst_column(column, &matching_segments[m0..im]);
                }
            } else if learn && self.params.predicted_segment_decrement > 0.0 {
                step.punish(&matching_segments[m0..im]);
            }
        }

        self.active_segments = active_segments;
        self.matching_segments = matching_segments;
        self.bursting_columns = bursting;
        if learn {
            for &cell in &self.prev_active {
                self.prev_active_mask[(cell >> 6) as usize] = 0;
            }
        }
        self.dendrites_valid = false;
    }

    /// Raw anomaly of the last compute (§5.1); −1 after [`TemporalMemory::reset`].
    pub fn anomaly(&self) -> f32 {
        self.anomaly
    }

    /// Cells active after the last compute, sorted.
    pub fn active_cells(&self) -> &[u32] {
        &self.active_cells
    }

    /// Winner (learning) cells of the last compute, one per active column,
    /// sorted.
    pub fn winner_cells(&self) -> &[u32] {
        &self.winner_cells
    }

    /// Cells predicted for the *next* compute (runs the dendrite step if it
    /// has not run since the last compute; §4 notes).
    pub fn predictive_cells(&mut self) -> &[u32] {
        self.activate_dendrites();
        &self.predictive_cells
    }

    /// Columns that had ≥ 1 predictive cell going into the last compute
    /// (sorted) — used for diagnostics such as the fraction of bursting
    /// columns.
    pub fn predicted_columns_of_last_compute(&self) -> &[u32] {
        &self.predicted_columns
    }

    /// Active columns of the last compute that had no prediction (they burst).
    pub fn bursting_columns_of_last_compute(&self) -> usize {
        self.bursting_columns
    }

    /// Forget the current sequence context: no cell is active or winner, so
    /// the next input bursts and grows no segment. Learned synapses stay.
    pub fn reset(&mut self) {
        self.active_cells.clear();
        self.winner_cells.clear();
        self.active_segments.clear();
        self.matching_segments.clear();
        self.predictive_cells.clear();
        self.predicted_columns.clear();
        self.bursting_columns = 0;
        self.dendrites_valid = false;
        self.anomaly = -1.0;
    }

    /// Number of columns.
    pub fn num_columns(&self) -> u32 {
        self.num_columns
    }

    /// Number of cells (columns × cells per column).
    pub fn num_cells(&self) -> u32 {
        self.num_columns * self.params.cells_per_column
    }

    /// The column `cell` belongs to.
    pub fn column_for_cell(&self, cell: u32) -> u32 {
        debug_assert!(cell < self.num_cells());
        cell / self.params.cells_per_column
    }

    /// Number of live segments.
    pub fn num_segments(&self) -> usize {
        self.connections.num_segments()
    }

    /// Number of live synapses.
    pub fn num_synapses(&self) -> usize {
        self.connections.num_synapses()
    }

    /// The synapse store (read-only).
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The parameters this Temporal Memory was built with.
    pub fn params(&self) -> &TemporalMemoryParams {
        &self.params
    }

    /// Approximate heap bytes held, scratch buffers included.
    pub fn memory_bytes(&self) -> usize {
        let words = self.active_cells.capacity()
            + self.winner_cells.capacity()
            + self.predicted_columns.capacity()
            + self.active_segments.capacity()
            + self.matching_segments.capacity()
            + self.predictive_cells.capacity()
            + self.prev_active.capacity()
            + self.prev_winners.capacity()
            + 2 * self.prev_active_mask.capacity()
            + 2 * self.segment_keys.capacity()
            + self.first_order_cells.capacity()
            + self.first_order_columns.capacity()
            + 624;
        self.connections.memory_bytes()
            + self.activity.memory_bytes()
            + self.first_order_activity.memory_bytes()
            + 4 * words
    }
}

/// The distinct columns of `cells` (sorted), in order.
fn columns_of(cells: &[u32], cells_per_column: u32) -> impl Iterator<Item = u32> + '_ {
    let mut previous = None;
    cells
        .iter()
        .map(move |&cell| cell / cells_per_column)
        .filter(move |&column| previous.replace(column) != Some(column))
}

/// The borrowed pieces of a Temporal Memory that one `activate_cells` pass
/// works with, so the per-column rules below can be plain methods.
struct Step<'a> {
    params: &'a TemporalMemoryParams,
    connections: &'a mut Connections,
    rng: &'a mut Random,
    activity: &'a SegmentActivity,
    prev_active_mask: &'a [u64],
    prev_winners: &'a [u32],
    active_cells: &'a mut Vec<u32>,
    winner_cells: &'a mut Vec<u32>,
    learn: bool,
}

impl Step<'_> {
    /// An active column with active segments: their cells fire and win, and
    /// (when learning) each active segment is reinforced.
    fn activate_predicted_column(&mut self, segments: &[u32]) {
        for &segment in segments {
            let cell = self.connections.cell_for_segment(segment);
            if self.active_cells.last() != Some(&cell) {
                self.active_cells.push(cell);
                self.winner_cells.push(cell);
            }
            if self.learn {
                self.reinforce(segment);
            }
        }
    }

    /// An active column without active segments: every cell fires; one
    /// winner learns, on the best matching segment or on a new segment.
    fn burst_column(&mut self, column: u32, matching: &[u32]) {
        let cpc = self.params.cells_per_column;
        let first = column * cpc;
        self.active_cells.extend(first..first + cpc);

        // Largest potential count; ties keep the first in (cell, id) order.
        let mut best: Option<(u32, u32)> = None;
        for &segment in matching {
            let potential = self.activity.potential(segment);
            if best.is_none_or(|(_, p)| potential > p) {
                best = Some((segment, potential));
            }
        }
        let best = best.map(|(segment, _)| segment);

        let winner = match best {
            Some(segment) => self.connections.cell_for_segment(segment),
            None => {
                let at = self.prev_winners.partition_point(|&w| w < first);
                match self.prev_winners.get(at) {
                    Some(&w) if w < first + cpc => w,
                    _ => self.least_used_cell(first),
                }
            }
        };
        self.winner_cells.push(winner);

        if !self.learn {
            return;
        }
        match best {
            Some(segment) => self.reinforce(segment),
            None => {
                let n = self.params.max_new_synapse_count as usize;
                let n = n.min(self.prev_winners.len());
                if n > 0 {
                    let segment = self
                        .connections
                        .create_segment(winner, self.params.max_segments_per_cell);
                    self.connections.grow_synapses(
                        segment,
                        self.prev_winners,
                        self.params.initial_permanence,
                        self.rng,
                        n as u32,
                        self.params.max_synapses_per_segment,
                    );
                }
            }
        }
    }

    /// The cell of the column starting at `first` with the fewest segments,
    /// ties to the lowest id. htm.core shuffles the column's cells first;
    /// the choice does not depend on that order, but the draws are made so
    /// the generator stays in step (§9 item 8).
    fn least_used_cell(&mut self, first: u32) -> u32 {
        let cpc = self.params.cells_per_column;
        for i in (1..cpc).rev() {
            // One draw per Fisher–Yates step of a `cpc`-element shuffle.
            self.rng.next_u32_below(i + 1);
        }
        (first..first + cpc)
            .min_by_key(|&cell| self.connections.segments_for_cell(cell).len())
            .expect("a column has at least one cell")
    }

    /// Reinforce a correctly active or best matching segment, then grow it
    /// towards `max_new_synapse_count` active synapses (counted before the
    /// adaptation, §9 item 6).
    fn reinforce(&mut self, segment: u32) {
        let mask = self.prev_active_mask;
        self.connections.adapt_segment(
            segment,
            |cell| is_set(mask, cell),
            self.params.permanence_increment,
            self.params.permanence_decrement,
            true,
            self.params.min_threshold,
        );
        let wanted = i64::from(self.params.max_new_synapse_count)
            - i64::from(self.activity.potential(segment));
        if wanted > 0 && self.connections.segment_exists(segment) {
            self.connections.grow_synapses(
                segment,
                self.prev_winners,
                self.params.initial_permanence,
                self.rng,
                wanted as u32,
                self.params.max_synapses_per_segment,
            );
        }
    }

    /// Weaken the active synapses of segments that matched in a column that
    /// stayed inactive (`predicted_segment_decrement`).
    fn punish(&mut self, segments: &[u32]) {
        let mask = self.prev_active_mask;
        for &segment in segments {
            self.connections.adapt_segment(
                segment,
                |cell| is_set(mask, cell),
                -self.params.predicted_segment_decrement,
                0.0,
                true,
                self.params.min_threshold,
            );
        }
    }
}

/// The smaller of two optional columns (`None` when both are).
#[inline]
fn earliest(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[inline]
fn is_set(mask: &[u64], cell: u32) -> bool {
    mask.get((cell >> 6) as usize)
        .is_some_and(|w| w >> (cell & 63) & 1 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The small setup of htm.core's unit tests: 32 columns, thresholds 3/2.
    fn small(cells_per_column: u32) -> TemporalMemoryParams {
        TemporalMemoryParams {
            cells_per_column,
            activation_threshold: 3,
            initial_permanence: 0.21,
            connected_permanence: 0.5,
            min_threshold: 2,
            max_new_synapse_count: 3,
            permanence_increment: 0.1,
            permanence_decrement: 0.1,
            predicted_segment_decrement: 0.0,
            seed: 42,
            max_segments_per_cell: 255,
            max_synapses_per_segment: 255,
            first_order_fallback: 0.0,
        }
    }

    fn tm(params: TemporalMemoryParams) -> TemporalMemory {
        TemporalMemory::new(32, params).unwrap()
    }

    fn cols(active: &[u32]) -> Sdr {
        Sdr::from_indices(32, active.iter().copied())
    }

    /// Hand-build a segment on `cell` with (presynaptic cell, permanence) pairs.
    fn segment(tm: &mut TemporalMemory, cell: u32, synapses: &[(u32, f32)]) -> u32 {
        let seg = tm.connections.create_segment(cell, 0);
        for &(presyn, perm) in synapses {
            tm.connections.create_synapse(seg, presyn, perm);
        }
        seg
    }

    /// (presynaptic cell, permanence) of a segment's synapses, by cell.
    fn synapses(tm: &TemporalMemory, seg: u32) -> Vec<(u32, f32)> {
        let c = tm.connections();
        let mut v: Vec<(u32, f32)> = c
            .synapses_for_segment(seg)
            .iter()
            .map(|&s| (c.presynaptic_cell(s), c.permanence(s)))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    fn presyns(tm: &TemporalMemory, seg: u32) -> Vec<u32> {
        synapses(tm, seg).into_iter().map(|x| x.0).collect()
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn defaults_are_htm_cores() {
        let p = TemporalMemoryParams::default();
        assert_eq!(
            (
                p.cells_per_column,
                p.activation_threshold,
                p.min_threshold,
                p.max_new_synapse_count
            ),
            (32, 13, 10, 20)
        );
        assert_eq!((p.initial_permanence, p.connected_permanence), (0.21, 0.5));
        assert_eq!((p.permanence_increment, p.permanence_decrement), (0.1, 0.1));
        assert_eq!((p.predicted_segment_decrement, p.seed), (0.0, 42));
        assert_eq!(
            (p.max_segments_per_cell, p.max_synapses_per_segment),
            (255, 255)
        );
        assert_eq!(p.first_order_fallback, 0.0, "htm.core has no fallback");
    }

    #[test]
    fn nonsense_parameters_are_rejected_by_name() {
        let field = |p: TemporalMemoryParams, n: u32| match TemporalMemory::new(n, p) {
            Err(TemporalMemoryError::InvalidParameter { field, .. }) => field,
            Ok(_) => "accepted",
        };
        let d = TemporalMemoryParams::default;
        assert_eq!(field(d(), 0), "num_columns");
        assert_eq!(
            field(
                TemporalMemoryParams {
                    cells_per_column: 0,
                    ..d()
                },
                8
            ),
            "cells_per_column"
        );
        assert_eq!(
            field(
                TemporalMemoryParams {
                    min_threshold: 14,
                    ..d()
                },
                8
            ),
            "min_threshold"
        );
        assert_eq!(
            field(
                TemporalMemoryParams {
                    activation_threshold: 0,
                    ..d()
                },
                8
            ),
            "activation_threshold"
        );
        assert_eq!(
            field(
                TemporalMemoryParams {
                    connected_permanence: 1.5,
                    ..d()
                },
                8
            ),
            "connected_permanence"
        );
        assert_eq!(
            field(
                TemporalMemoryParams {
                    initial_permanence: -0.1,
                    ..d()
                },
                8
            ),
            "initial_permanence"
        );
        assert_eq!(
            field(
                TemporalMemoryParams {
                    permanence_decrement: f32::NAN,
                    ..d()
                },
                8
            ),
            "permanence_decrement"
        );
        assert_eq!(
            field(
                TemporalMemoryParams {
                    first_order_fallback: 1.5,
                    ..d()
                },
                8
            ),
            "first_order_fallback"
        );
        assert_eq!(
            field(
                TemporalMemoryParams {
                    max_segments_per_cell: 0,
                    ..d()
                },
                8
            ),
            "max_segments_per_cell"
        );
        assert_eq!(
            field(
                TemporalMemoryParams {
                    max_synapses_per_segment: 0,
                    ..d()
                },
                8
            ),
            "max_synapses_per_segment"
        );
        assert_eq!(field(d(), 2048), "accepted");
        let err = TemporalMemory::new(
            8,
            TemporalMemoryParams {
                cells_per_column: 0,
                ..d()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("cells_per_column"), "{err}");
    }

    #[test]
    fn params_json_fills_defaults_and_rejects_unknown_fields() {
        let p: TemporalMemoryParams = serde_json::from_str(r#"{"cells_per_column": 8}"#).unwrap();
        assert_eq!(
            p,
            TemporalMemoryParams {
                cells_per_column: 8,
                ..Default::default()
            }
        );
        assert!(serde_json::from_str::<TemporalMemoryParams>(r#"{"cells": 8}"#).is_err());
    }

    #[test]
    fn column_for_cell_divides_by_cells_per_column() {
        let t = tm(small(4));
        assert_eq!(t.num_cells(), 128);
        let got: Vec<u32> = [0, 3, 4, 5, 127]
            .iter()
            .map(|&c| t.column_for_cell(c))
            .collect();
        assert_eq!(got, vec![0, 0, 1, 1, 31]);
    }

    #[test]
    fn an_unpredicted_column_bursts() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0]), true);
        assert_eq!(t.active_cells(), &[0, 1, 2, 3]);
        // All cells tie at zero segments: the lowest wins.
        assert_eq!(t.winner_cells(), &[0]);
        assert_eq!(t.anomaly(), 1.0);
        assert_eq!(t.bursting_columns_of_last_compute(), 1);
        assert!(t.predicted_columns_of_last_compute().is_empty());
    }

    #[test]
    fn predicted_cells_become_active_and_win() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0]), true);
        segment(&mut t, 5, &[(0, 0.5), (1, 0.5), (2, 0.5), (3, 0.5)]);
        assert_eq!(t.predictive_cells(), &[5]);
        t.compute(&cols(&[1]), true);
        assert_eq!(t.active_cells(), &[5]);
        assert_eq!(t.winner_cells(), &[5]);
        assert_eq!(t.anomaly(), 0.0);
        assert_eq!(t.predicted_columns_of_last_compute(), &[1]);
        assert_eq!(t.bursting_columns_of_last_compute(), 0);
    }

    #[test]
    fn zero_active_columns_leave_nothing_active() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0]), true);
        segment(&mut t, 5, &[(0, 0.5), (1, 0.5), (2, 0.5)]);
        t.compute(&cols(&[]), true);
        assert!(t.active_cells().is_empty() && t.winner_cells().is_empty());
        assert_eq!(t.anomaly(), 0.0);
        assert_eq!(t.predicted_columns_of_last_compute(), &[1]);
        assert!(t.predictive_cells().is_empty());
    }

    #[test]
    fn each_bursting_column_has_one_winner() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0, 1, 3]), true);
        let winner_columns: Vec<u32> = t
            .winner_cells()
            .iter()
            .map(|&c| t.column_for_cell(c))
            .collect();
        assert_eq!(winner_columns, vec![0, 1, 3]);
        assert_eq!(t.active_cells().len(), 12);
    }

    #[test]
    fn correctly_active_segments_are_reinforced_and_weak_synapses_pruned() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0]), true);
        let seg = segment(
            &mut t,
            5,
            &[(0, 0.5), (1, 0.5), (2, 0.5), (81, 0.5), (82, 0.015)],
        );
        t.compute(&cols(&[1]), true);
        let got = synapses(&t, seg);
        assert_eq!(presyns(&t, seg), vec![0, 1, 2, 81], "82 fell below 1e-6");
        assert!(got[..3].iter().all(|&(_, p)| close(p, 0.6)));
        assert!(close(got[3].1, 0.4));
    }

    #[test]
    fn a_bursting_column_teaches_its_best_matching_segment() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0]), true);
        // Cell 5: two active potential synapses (matching, not active).
        let best = segment(&mut t, 5, &[(0, 0.3), (1, 0.3), (81, 0.3)]);
        // Cell 6: only one active synapse, not matching.
        let other = segment(&mut t, 6, &[(2, 0.3), (82, 0.3)]);
        t.compute(&cols(&[1]), true);
        assert_eq!(t.active_cells(), &[4, 5, 6, 7]);
        assert_eq!(t.winner_cells(), &[5]);
        let got = synapses(&t, best);
        assert!(close(got[0].1, 0.4) && close(got[1].1, 0.4) && close(got[2].1, 0.2));
        // The previous winner (cell 0) is already on the segment: no growth.
        assert_eq!(got.len(), 3);
        assert_eq!(synapses(&t, other), vec![(2, 0.3), (82, 0.3)]);
    }

    #[test]
    fn best_matching_is_the_largest_overlap_with_ties_to_the_first() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0]), false);
        segment(&mut t, 6, &[(0, 0.3), (1, 0.3)]);
        segment(&mut t, 5, &[(2, 0.3), (3, 0.3)]);
        let mut probe = t.clone();
        probe.compute(&cols(&[1]), false);
        assert_eq!(
            probe.winner_cells(),
            &[5],
            "equal overlap: lower cell first"
        );
        segment(&mut t, 7, &[(0, 0.3), (1, 0.3), (3, 0.3)]);
        t.compute(&cols(&[1]), false);
        assert_eq!(t.winner_cells(), &[7], "larger overlap wins");
    }

    #[test]
    fn matching_segments_in_predicted_columns_are_left_alone() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0]), true);
        segment(&mut t, 4, &[(0, 0.5), (1, 0.5), (2, 0.5)]);
        let matching = segment(&mut t, 5, &[(0, 0.3), (1, 0.3)]);
        t.compute(&cols(&[1]), true);
        assert_eq!(t.active_cells(), &[4]);
        assert_eq!(synapses(&t, matching), vec![(0, 0.3), (1, 0.3)]);
    }

    #[test]
    fn no_segment_grows_without_previous_winners() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0, 1, 2]), true);
        assert_eq!(t.num_segments(), 0);
        t.reset();
        t.compute(&cols(&[3]), true);
        assert_eq!(t.num_segments(), 0);
    }

    #[test]
    fn new_segments_grow_to_max_new_synapse_count_previous_winners() {
        for (max_new, expected) in [(2, 2), (3, 3), (4, 3)] {
            let mut t = tm(TemporalMemoryParams {
                max_new_synapse_count: max_new,
                ..small(4)
            });
            t.compute(&cols(&[0, 1, 2]), true);
            let winners = t.winner_cells().to_vec();
            t.compute(&cols(&[4]), true);
            assert_eq!(t.num_segments(), 1);
            let seg = t.connections().segments_for_cell(t.winner_cells()[0])[0];
            let got = synapses(&t, seg);
            assert_eq!(got.len(), expected, "max_new {max_new}");
            assert!(got
                .iter()
                .all(|&(p, perm)| winners.contains(&p) && close(perm, 0.21)));
        }
    }

    #[test]
    fn growth_tops_up_to_max_new_from_the_potential_overlap() {
        let mut t = tm(TemporalMemoryParams {
            max_new_synapse_count: 4,
            ..small(4)
        });
        t.compute(&cols(&[0, 1, 2]), true);
        assert_eq!(t.winner_cells(), &[0, 4, 8]);
        let seg = segment(&mut t, 13, &[(0, 0.3), (1, 0.3)]);
        t.compute(&cols(&[3]), true);
        // Overlap 2, so 2 new synapses: 0 is already there, 4 and 8 are added.
        assert_eq!(presyns(&t, seg), vec![0, 1, 4, 8]);
    }

    #[test]
    fn no_growth_when_the_overlap_already_exceeds_max_new() {
        let mut t = tm(TemporalMemoryParams {
            max_new_synapse_count: 2,
            ..small(4)
        });
        t.compute(&cols(&[0, 1, 2]), true);
        let seg = segment(&mut t, 13, &[(1, 0.3), (2, 0.3), (3, 0.3)]);
        t.compute(&cols(&[3]), true);
        assert_eq!(t.winner_cells().last(), Some(&13));
        assert_eq!(presyns(&t, seg), vec![1, 2, 3]);
    }

    #[test]
    fn a_full_segment_recycles_its_weakest_synapse() {
        let mut t = tm(TemporalMemoryParams {
            max_synapses_per_segment: 3,
            ..small(4)
        });
        t.compute(&cols(&[0, 1, 2]), true);
        let seg = segment(&mut t, 13, &[(0, 0.3), (1, 0.3), (81, 0.15)]);
        t.compute(&cols(&[3]), true);
        let got = presyns(&t, seg);
        assert_eq!(got.len(), 3);
        assert!(!got.contains(&81), "{got:?}");
        assert!(got.contains(&4) || got.contains(&8), "{got:?}");
    }

    #[test]
    fn matching_segments_of_inactive_columns_are_punished_only_when_enabled() {
        for (decrement, expected) in [(0.0, 0.5), (0.08, 0.42)] {
            let mut t = tm(TemporalMemoryParams {
                predicted_segment_decrement: decrement,
                ..small(4)
            });
            t.compute(&cols(&[0]), true);
            let seg = segment(&mut t, 5, &[(0, 0.5), (1, 0.5), (2, 0.5), (81, 0.5)]);
            t.compute(&cols(&[2]), true);
            let got = synapses(&t, seg);
            assert!(got[..3].iter().all(|&(_, p)| close(p, expected)), "{got:?}");
            assert!(close(got[3].1, 0.5), "inactive synapse untouched");
        }
    }

    #[test]
    fn punishment_prunes_synapses_and_destroys_segments_that_cannot_match() {
        let params = TemporalMemoryParams {
            predicted_segment_decrement: 0.02,
            ..small(4)
        };
        let mut t = tm(params.clone());
        t.compute(&cols(&[0]), true);
        let seg = segment(&mut t, 5, &[(0, 0.5), (1, 0.5), (2, 0.5), (3, 0.015)]);
        t.compute(&cols(&[2]), true);
        assert_eq!(presyns(&t, seg), vec![0, 1, 2]);

        let mut t = tm(params);
        t.compute(&cols(&[0]), true);
        let seg = segment(&mut t, 5, &[(0, 0.015), (1, 0.015), (2, 0.3)]);
        t.compute(&cols(&[2]), true);
        assert!(t.connections().segments_for_cell(5).is_empty());
        // Column 2 burst and grew a segment on its winner, reusing the freed id.
        assert_eq!(t.winner_cells(), &[8]);
        assert_eq!(t.connections().segments_for_cell(8), &[seg]);
        assert_eq!(t.num_segments(), 1);
    }

    #[test]
    fn a_new_segment_goes_to_the_least_used_cell_after_the_shuffle_draws() {
        let mut t = tm(small(4));
        let mut expected_rng = Random::new(42);
        t.compute(&cols(&[0]), true);
        for cell in 4..7 {
            segment(&mut t, cell, &[(100, 0.3)]);
        }
        t.compute(&cols(&[1]), true);
        assert_eq!(t.winner_cells(), &[7]);
        assert_eq!(t.connections().segments_for_cell(7).len(), 1);
        // Two least-used picks of a 4-cell column: 3 draws each, nothing else
        // (one candidate, so growth does not shuffle).
        for _ in 0..6 {
            expected_rng.next_u32();
        }
        assert_eq!(t.rng, expected_rng);
    }

    #[test]
    fn a_bursting_column_reuses_its_previous_winner() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0]), true);
        assert_eq!(t.winner_cells(), &[0]);
        segment(&mut t, 0, &[(100, 0.3)]);
        segment(&mut t, 0, &[(101, 0.3)]);
        let rng_before = t.rng.clone();
        t.compute(&cols(&[0]), true);
        // Cell 0 is the most used cell, but it won last time in this column.
        assert_eq!(t.winner_cells(), &[0]);
        assert_eq!(t.rng, rng_before, "no least-used draw was needed");
    }

    #[test]
    fn learn_false_never_changes_the_connections() {
        let mut t = tm(small(4));
        let sequence = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]];
        for _ in 0..10 {
            for s in &sequence {
                t.compute(&cols(s), true);
            }
        }
        assert!(t.num_segments() > 0);
        let before = serde_json::to_string(&t.connections).unwrap();
        for s in sequence.iter().chain(&[[20, 21, 22], [0, 5, 9]]) {
            t.compute(&cols(s), false);
            assert!(!t.active_cells().is_empty());
        }
        assert_eq!(serde_json::to_string(&t.connections).unwrap(), before);
    }

    #[test]
    fn a_full_cell_evicts_a_segment_each_time_it_needs_a_new_one() {
        let mut t = tm(TemporalMemoryParams {
            max_segments_per_cell: 2,
            ..small(1)
        });
        let mut seen = 0;
        for context in 1..8 {
            t.compute(&cols(&[context]), true);
            t.compute(&cols(&[0]), true);
            let segs = t.connections().segments_for_cell(0);
            assert!(segs.len() <= 2);
            // The newest segment always holds the latest context.
            let newest = *segs.last().unwrap();
            assert_eq!(presyns(&t, newest), vec![context]);
            seen = seen.max(segs.len());
        }
        assert_eq!(seen, 2);
        assert_eq!(t.connections().segments_for_cell(0).len(), 2);
        // Ids are recycled: 7 segments on the context cells + 2 on cell 0
        // were made, never more than that many slots.
        assert!(t.connections().segment_capacity() <= 9);
    }

    #[test]
    fn reset_clears_the_context() {
        let mut t = tm(small(4));
        t.compute(&cols(&[0]), true);
        segment(&mut t, 5, &[(0, 0.5), (1, 0.5), (2, 0.5)]);
        t.reset();
        assert_eq!(t.anomaly(), -1.0);
        assert!(t.active_cells().is_empty() && t.predictive_cells().is_empty());
        t.compute(&cols(&[1]), true);
        assert_eq!(t.active_cells(), &[4, 5, 6, 7]);
        assert_eq!(t.anomaly(), 1.0);
    }

    // ------------------------------------------------------------ behaviour

    /// `n` random patterns of 40 active columns out of 2048.
    fn patterns(n: usize, seed: u32) -> Vec<Sdr> {
        let mut rng = Random::new(seed);
        (0..n)
            .map(|_| {
                let mut s = Sdr::new(2048);
                s.randomize(40.0 / 2048.0, &mut rng);
                s
            })
            .collect()
    }

    fn big() -> TemporalMemory {
        TemporalMemory::new(2048, TemporalMemoryParams::default()).unwrap()
    }

    #[test]
    fn a_repeating_sequence_becomes_fully_predicted() {
        let p = patterns(4, 1);
        let mut t = big();
        let mut anomalies = Vec::new();
        for _ in 0..12 {
            for s in &p {
                t.compute(s, true);
                anomalies.push(t.anomaly());
            }
        }
        assert_eq!(anomalies[0], 1.0);
        assert!(anomalies[..4].iter().all(|&a| a == 1.0), "{anomalies:?}");
        assert!(
            anomalies[anomalies.len() - 8..].iter().all(|&a| a == 0.0),
            "{anomalies:?}"
        );
        // Once predicted, each step activates one cell per column.
        assert_eq!(t.active_cells().len(), 40);
        assert_eq!(t.bursting_columns_of_last_compute(), 0);
    }

    #[test]
    fn high_order_sequences_share_a_middle_but_predict_their_own_end() {
        // A B C D and X B C Y.
        let p = patterns(6, 2);
        let (a, b, c, d, x, y) = (&p[0], &p[1], &p[2], &p[3], &p[4], &p[5]);
        // Early on, C learned in context A also fires in context X (B bursts)
        // and grows a link to Y; punishing wrong predictions removes it.
        let mut t = TemporalMemory::new(
            2048,
            TemporalMemoryParams {
                predicted_segment_decrement: 0.05,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..15 {
            for seq in [[a, b, c, d], [x, b, c, y]] {
                for s in seq {
                    t.compute(s, true);
                }
                t.reset();
            }
        }
        for (first, last) in [(a, d), (x, y)] {
            for s in [first, b, c] {
                t.compute(s, false);
            }
            let cpc = t.params().cells_per_column;
            let mut predicted: Vec<u32> = t.predictive_cells().iter().map(|&c| c / cpc).collect();
            predicted.dedup();
            assert_eq!(
                predicted,
                last.indices(),
                "after {:?}…",
                &first.indices()[..3]
            );
            t.reset();
        }
    }

    /// Columns 0 and 1 burst, then columns 2 and 3 are predicted by one cell
    /// each (cells 8 and 12): a narrow context. Other cells of those columns
    /// (9 and 13) predict column 4, so column 4 follows the *columns* 2 and 3
    /// but not this context of them.
    fn dead_end(first_order_fallback: f32) -> TemporalMemory {
        let mut t = tm(TemporalMemoryParams {
            activation_threshold: 2,
            first_order_fallback,
            ..small(4)
        });
        t.compute(&cols(&[0, 1]), false);
        segment(&mut t, 8, &[(0, 0.5), (1, 0.5)]);
        segment(&mut t, 12, &[(4, 0.5), (5, 0.5)]);
        segment(&mut t, 16, &[(9, 0.5), (13, 0.5)]);
        t.compute(&cols(&[2, 3]), false);
        assert_eq!(t.active_cells(), &[8, 12]);
        assert!(t.predictive_cells().is_empty());
        t
    }

    #[test]
    fn a_dead_end_is_scored_against_the_first_order_prediction() {
        let mut off = dead_end(0.0);
        off.compute(&cols(&[4]), true);
        assert_eq!(off.anomaly(), 1.0, "htm.core: nothing predicted");

        let mut on = dead_end(0.5);
        on.compute(&cols(&[4]), true);
        assert_eq!(on.anomaly(), 0.0, "columns 2 and 3 are followed by 4");
        // Only the score differs: column 4 bursts and learns in both.
        assert_eq!(on.active_cells(), off.active_cells());
        assert_eq!(on.active_cells(), &[16, 17, 18, 19]);
        assert_eq!(on.predicted_columns_of_last_compute(), &[] as &[u32]);

        on.compute(&cols(&[5]), true);
        assert_eq!(on.anomaly(), 1.0, "nothing ever followed column 4");
    }

    #[test]
    fn the_fallback_waits_for_a_prediction_below_its_fraction() {
        // Cells 8 and 12 predict column 5: one column for an input of two.
        let with_prediction = |fraction| {
            let mut t = dead_end(fraction);
            segment(&mut t, 20, &[(8, 0.5), (12, 0.5)]);
            t.dendrites_valid = false;
            assert_eq!(t.predictive_cells(), &[20]);
            t.compute(&cols(&[4]), true);
            t.anomaly()
        };
        assert_eq!(with_prediction(0.0), 1.0);
        assert_eq!(
            with_prediction(0.5),
            1.0,
            "1 of 2 columns is not below half"
        );
        assert_eq!(with_prediction(1.0), 0.0, "1 of 2 columns is below all");
    }

    #[test]
    fn reset_makes_a_learned_sequence_burst_again() {
        let p = patterns(3, 3);
        let mut t = big();
        for _ in 0..10 {
            for s in &p {
                t.compute(s, true);
            }
        }
        t.compute(&p[0], true);
        assert_eq!(t.anomaly(), 0.0, "the wrap-around was learned too");
        t.compute(&p[1], true);
        t.compute(&p[2], true);
        t.reset();
        t.compute(&p[0], true);
        assert_eq!(t.anomaly(), 1.0);
        assert_eq!(t.bursting_columns_of_last_compute(), 40);
        assert_eq!(t.active_cells().len(), 40 * 32);
    }

    // ------------------------------------------------------------ properties

    /// A small, tightly limited TM and an alphabet of 6 patterns, so random
    /// sequences exercise growth, eviction, recycling and punishment.
    fn tight() -> TemporalMemory {
        tm(TemporalMemoryParams {
            max_segments_per_cell: 3,
            max_synapses_per_segment: 6,
            predicted_segment_decrement: 0.05,
            ..small(4)
        })
    }

    fn alphabet() -> Vec<Sdr> {
        let mut rng = Random::new(9);
        (0..6)
            .map(|_| {
                let mut s = Sdr::new(32);
                s.randomize(4.0 / 32.0, &mut rng);
                s
            })
            .collect()
    }

    type Trace = Vec<(Vec<u32>, Vec<u32>, u32)>;

    fn run(t: &mut TemporalMemory, steps: &[(usize, bool)], abc: &[Sdr]) -> Trace {
        steps
            .iter()
            .map(|&(i, learn)| {
                t.compute(&abc[i], learn);
                (
                    t.active_cells().to_vec(),
                    t.winner_cells().to_vec(),
                    t.anomaly().to_bits(),
                )
            })
            .collect()
    }

    fn steps() -> impl Strategy<Value = Vec<(usize, bool)>> {
        proptest::collection::vec((0usize..6, prop::bool::weighted(0.9)), 1..80)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn permanences_stay_in_range_and_bookkeeping_holds(steps in steps()) {
            let abc = alphabet();
            let mut t = tight();
            for &(i, learn) in &steps {
                t.compute(&abc[i], learn);
                let c = t.connections();
                for cell in 0..t.num_cells() {
                    prop_assert!(c.segments_for_cell(cell).len() <= 3);
                    for &seg in c.segments_for_cell(cell) {
                        prop_assert!(c.synapses_for_segment(seg).len() <= 6);
                        for &s in c.synapses_for_segment(seg) {
                            prop_assert!((0.0..=1.0).contains(&c.permanence(s)));
                        }
                    }
                }
                prop_assert!(t.winner_cells().len() == abc[i].count());
                prop_assert!(t.winner_cells().windows(2).all(|w| w[0] < w[1]));
                prop_assert!(t.active_cells().windows(2).all(|w| w[0] < w[1]));
            }
            t.connections().check_invariants();
        }

        #[test]
        fn the_same_seed_gives_the_same_outputs(steps in steps()) {
            let abc = alphabet();
            let (mut a, mut b) = (tight(), tight());
            prop_assert_eq!(run(&mut a, &steps, &abc), run(&mut b, &steps, &abc));
        }

        #[test]
        fn the_first_order_fallback_changes_only_the_raw_anomaly(
            steps in steps(), fraction in prop::sample::select(vec![0.25f32, 0.5, 1.0]),
        ) {
            let abc = alphabet();
            let mut off = tight();
            let mut on = tm(TemporalMemoryParams { first_order_fallback: fraction, ..tight().params });
            for &(i, learn) in &steps {
                off.compute(&abc[i], learn);
                on.compute(&abc[i], learn);
                prop_assert_eq!(on.active_cells(), off.active_cells());
                prop_assert_eq!(on.winner_cells(), off.winner_cells());
                prop_assert!(on.anomaly() <= off.anomaly());
            }
            prop_assert_eq!(
                serde_json::to_string(on.connections()).unwrap(),
                serde_json::to_string(off.connections()).unwrap()
            );
        }

        #[test]
        fn a_restored_checkpoint_continues_exactly(
            before in steps(), after in steps(), peek in any::<bool>(),
            fallback in prop::sample::select(vec![0.0f32, 0.5]),
        ) {
            let abc = alphabet();
            let mut original = tm(TemporalMemoryParams { first_order_fallback: fallback, ..tight().params });
            run(&mut original, &before, &abc);
            if peek {
                // Predictions computed before saving must not change anything.
                original.predictive_cells();
            }
            let json = serde_json::to_string(&original).unwrap();
            let mut restored: TemporalMemory = serde_json::from_str(&json).unwrap();
            // The derived per-segment links are rebuilt on load.
            restored.connections().check_invariants();
            prop_assert_eq!(run(&mut original, &after, &abc), run(&mut restored, &after, &abc));
            prop_assert_eq!(original.predictive_cells().to_vec(), restored.predictive_cells().to_vec());
            prop_assert_eq!(serde_json::to_string(&original).unwrap(), serde_json::to_string(&restored).unwrap());
        }
    }
}
