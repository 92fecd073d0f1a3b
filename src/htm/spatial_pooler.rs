//! The Spatial Pooler: maps an input SDR to a fixed-sparsity set of active
//! columns, learning which input bits each column responds to.
//!
//! Every column owns one proximal segment whose synapses reach a random
//! subset (the *potential pool*) of the inputs around the column's centre.
//! A column's overlap is the number of active inputs on its *connected*
//! synapses; the columns with the largest (boosted) overlaps win an
//! inhibition round, and only winners learn (Hebbian: synapses on active
//! inputs grow, the others decay). Duty cycles track how often each column
//! overlaps and wins; boosting and bumping keep rarely used columns in play,
//! so the whole column population is used to represent the input space.
//!
//! Semantics follow htm.core (reference `docs/htm-reference.md`: §2 for the
//! synapse rules the SP relies on, §3 for the algorithm, §9 for the pitfalls),
//! including the order of random draws and the f32/f64 mix of every formula,
//! so that a pooler built here produces the same columns as htm.core's bit
//! for bit (checked by the `ExactOutput` scenario in the tests below).
//!
//! Layout: every column owns one row of bits over the input space saying
//! which inputs are in its potential pool, and a second row saying which of
//! those synapses are connected. The permanences are dense: column `c` owns
//! one `f32` per input bit of its row (entries outside the pool stay 0 and
//! are never read), so a learning pass is one branch-free vector sweep
//! ([`super::dense_row`]) instead of a walk over a compact synapse list. The
//! potential pools of the presets cover about 80 % of the input, so the dense
//! rows cost only a quarter more than a compact list would. A column's
//! overlap is the population count of its connected row AND the input's
//! bits — a few words per column, no per-synapse index to maintain when a
//! permanence crosses the connected threshold (the sweep rewrites the row).
//! The rows suit the encoder-sized inputs this service feeds (hundreds to a
//! few thousand bits). The connected rows are derived, so they are rebuilt,
//! not stored, when a pooler is deserialized; the stored format lists each
//! pool's inputs and permanences compactly, in ascending input order.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::dense_row::{self, LANES_PER_WORD};
use super::random::Random;
use super::sdr::Sdr;

/// htm.core's global permanence epsilon (`EPS`, reference "Conventions").
const EPS: f32 = 1e-6;
/// Fraction of a potential pool whose initial permanence is drawn connected.
const INIT_CONNECTED_PCT: f64 = 0.5;
/// Upper bound of the target density of active columns.
const MAX_LOCAL_AREA_DENSITY: f32 = 0.5;
/// Inhibition radius and minimum duty cycles are refreshed every this many
/// iterations.
const UPDATE_PERIOD: u32 = 50;
/// Largest supported number of input / column dimensions (fixed-size
/// coordinate buffers keep neighbourhood walks allocation-free).
pub const MAX_DIMENSIONS: usize = 8;

/// Spatial Pooler parameters (reference §3.1; JSON names are the field names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpatialPoolerParams {
    /// Shape of the column space; same rank as the input.
    pub column_dimensions: Vec<u32>,
    /// Neighbourhood radius (input coordinates) of a column's potential pool;
    /// values above the number of inputs are clipped to it.
    pub potential_radius: u32,
    /// Fraction of the neighbourhood that becomes the potential pool, in (0, 1].
    pub potential_pct: f32,
    /// Whether all columns compete in one inhibition area.
    pub global_inhibition: bool,
    /// Target fraction of active columns (exclusive with the next field).
    pub local_area_density: f32,
    /// Alternative target: winners per inhibition area.
    pub num_active_columns_per_inh_area: u32,
    /// Minimum boosted overlap for a column to become active; also the number
    /// of synapses each column keeps connected.
    pub stimulus_threshold: u32,
    /// Permanence decrement of inactive inputs on winning columns.
    pub syn_perm_inactive_dec: f32,
    /// Permanence increment of active inputs on winning columns.
    pub syn_perm_active_inc: f32,
    /// Permanence at which a synapse counts as connected.
    pub syn_perm_connected: f32,
    /// Weak-column threshold, as a fraction of the largest overlap duty cycle.
    pub min_pct_overlap_duty_cycles: f32,
    /// Averaging window of the duty cycles (iterations).
    pub duty_cycle_period: u32,
    /// Boosting strength; 0 disables boosting.
    pub boost_strength: f32,
    /// Seed of the pooler's random generator (0 is an ordinary seed here).
    pub seed: u32,
    /// Whether neighbourhoods wrap around the edges of the input and column
    /// spaces.
    pub wrap_around: bool,
}

impl Default for SpatialPoolerParams {
    /// htm.core's python-binding defaults, except global inhibition and 2048
    /// columns.
    fn default() -> Self {
        Self {
            column_dimensions: vec![2048],
            potential_radius: 16,
            potential_pct: 0.5,
            global_inhibition: true,
            local_area_density: 0.02,
            num_active_columns_per_inh_area: 0,
            stimulus_threshold: 0,
            syn_perm_inactive_dec: 0.01,
            syn_perm_active_inc: 0.1,
            syn_perm_connected: 0.1,
            min_pct_overlap_duty_cycles: 0.001,
            duty_cycle_period: 1000,
            boost_strength: 0.0,
            seed: 1,
            wrap_around: true,
        }
    }
}

/// Why a Spatial Pooler could not be built or restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpatialPoolerError {
    /// A parameter (named as in JSON; `input_dimensions` for the input shape)
    /// is out of its valid range.
    #[error("invalid spatial pooler parameter `{field}`: {message}")]
    InvalidParameter {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A deserialized state is internally inconsistent.
    #[error("corrupt spatial pooler state: {0}")]
    CorruptState(String),
}

fn invalid(field: &'static str, message: impl Into<String>) -> SpatialPoolerError {
    SpatialPoolerError::InvalidParameter {
        field,
        message: message.into(),
    }
}

/// The serialized form of a pooler: everything that defines it, the
/// potential pools as explicit input lists.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    params: SpatialPoolerParams,
    input_dimensions: Vec<u32>,
    num_inputs: u32,
    num_columns: u32,
    potential_radius: u32,
    connected_threshold: f32,
    pool_offsets: Vec<u32>,
    /// Presynaptic input of every synapse, ascending within a column.
    pool_inputs: Vec<u32>,
    pool_perms: Vec<f32>,
    overlap_duty_cycles: Vec<f32>,
    active_duty_cycles: Vec<f32>,
    min_overlap_duty_cycles: Vec<f32>,
    boost_factors: Vec<f32>,
    inhibition_radius: u32,
    iteration_num: u32,
    iteration_learn_num: u32,
    rng: Random,
}

/// [`Stored`] borrowed from a live pooler, field for field in the same order,
/// so serializing needs no copy of the permanences.
#[derive(Serialize)]
#[serde(rename = "Stored")]
struct StoredRef<'a> {
    params: &'a SpatialPoolerParams,
    input_dimensions: &'a [u32],
    num_inputs: u32,
    num_columns: u32,
    potential_radius: u32,
    connected_threshold: f32,
    pool_offsets: PoolOffsets<'a>,
    pool_inputs: PoolInputs<'a>,
    pool_perms: PoolPerms<'a>,
    overlap_duty_cycles: &'a [f32],
    active_duty_cycles: &'a [f32],
    min_overlap_duty_cycles: &'a [f32],
    boost_factors: &'a [f32],
    inhibition_radius: u32,
    iteration_num: u32,
    iteration_learn_num: u32,
    rng: &'a Random,
}

/// Serializes the potential rows as the list of pool inputs, column after
/// column, ascending within a column.
struct PoolInputs<'a> {
    potential: &'a [u64],
    row_words: usize,
}

/// Serializes where each column's synapses start in the compact lists: the
/// running total of the pool sizes, `num_columns + 1` entries from 0.
struct PoolOffsets<'a> {
    potential: &'a [u64],
    row_words: usize,
}

impl Serialize for PoolOffsets<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let rows = self.potential.chunks_exact(self.row_words);
        let mut seq = serializer.serialize_seq(Some(rows.len() + 1))?;
        let mut total = 0u32;
        seq.serialize_element(&total)?;
        for row in rows {
            total += row.iter().map(|w| w.count_ones()).sum::<u32>();
            seq.serialize_element(&total)?;
        }
        seq.end()
    }
}

/// Serializes the permanences of the pool synapses only, column after
/// column, inputs ascending (the order of [`PoolInputs`]).
struct PoolPerms<'a> {
    potential: &'a [u64],
    perms: &'a [f32],
}

impl Serialize for PoolPerms<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let len = self.potential.iter().map(|w| w.count_ones() as usize).sum();
        let mut seq = serializer.serialize_seq(Some(len))?;
        for (w, &bits) in self.potential.iter().enumerate() {
            for b in SetBits(bits) {
                seq.serialize_element(&self.perms[w * LANES_PER_WORD + b as usize])?;
            }
        }
        seq.end()
    }
}

/// The positions of the set bits of a word, ascending.
#[derive(Clone, Copy, Debug)]
struct SetBits(u64);

impl Iterator for SetBits {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(b)
    }
}

impl Serialize for PoolInputs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Every row starts at a word boundary and rows are contiguous, so the
        // set bits of one row come out ascending; the input index of a bit is
        // its position within the row.
        use serde::ser::SerializeSeq;
        let len = self.potential.iter().map(|w| w.count_ones() as usize).sum();
        let mut seq = serializer.serialize_seq(Some(len))?;
        for (w, &bits) in self.potential.iter().enumerate() {
            let base = 64 * (w % self.row_words) as u32;
            for b in SetBits(bits) {
                seq.serialize_element(&(base + b))?;
            }
        }
        seq.end()
    }
}

/// Everything that defines a pooler (the learned state and its shape).
#[derive(Clone, Debug)]
struct State {
    params: SpatialPoolerParams,
    input_dimensions: Vec<u32>,
    num_inputs: u32,
    num_columns: u32,
    /// `potential_radius` clipped to the number of inputs.
    potential_radius: u32,
    /// `syn_perm_connected - EPS`: a synapse is connected iff its permanence
    /// is at least this (reference §2).
    connected_threshold: f32,
    /// Words per column row (`ceil(num_inputs / 64)`).
    row_words: usize,
    /// Column `c`'s potential pool: bit `i` of row `c` (words
    /// `c * row_words..`) is set iff input `i` is in the pool.
    potential: Vec<u64>,
    /// Dense permanences, laid out like `potential` with one `f32` per bit:
    /// entry `c * 64 * row_words + i` is the permanence of column `c`'s
    /// synapse on input `i`, in [0, 1]; 0 where `i` is not in the pool.
    perms: Vec<f32>,
    overlap_duty_cycles: Vec<f32>,
    active_duty_cycles: Vec<f32>,
    min_overlap_duty_cycles: Vec<f32>,
    boost_factors: Vec<f32>,
    inhibition_radius: u32,
    /// Calls to `compute` (learning or not); drives the duty-cycle period and
    /// the update rounds.
    iteration_num: u32,
    /// Calls to `compute` with `learn = true`.
    iteration_learn_num: u32,
    rng: Random,
}

/// The Spatial Pooler (reference §3). Build with [`SpatialPooler::new`], feed
/// with [`SpatialPooler::compute`].
#[derive(Clone, Debug)]
pub struct SpatialPooler {
    state: State,
    /// Column `c`'s connected synapses, laid out like `state.potential`.
    /// Derived from the permanences; rebuilt on deserialization.
    connected: Vec<u64>,
    /// Per column: number of connected synapses.
    num_connected: Vec<u32>,
    /// The input of the current compute as a bit row (scratch, reused).
    input_bits: Vec<u64>,
    /// Sort keys for global inhibition (scratch, reused).
    keys: Vec<u64>,
    /// Raw overlaps of the last compute (scratch, reused).
    overlaps: Vec<u32>,
    /// Boosted overlaps of the last compute (scratch, reused).
    boosted: Vec<f32>,
    /// Winners of the last compute, ascending (scratch, reused).
    winners: Vec<u32>,
    /// Per column "already active in this pass" for local inhibition.
    active_mask: Vec<bool>,
    /// Scratch for finding the k-th largest permanence of a column.
    perm_scratch: Vec<f32>,
    /// Per input lane, the permanence change of a learning step:
    /// `+syn_perm_active_inc` on active inputs, `-syn_perm_inactive_dec`
    /// elsewhere (scratch, rebuilt each learning step).
    learn_delta: Vec<f32>,
    /// `uniform_value` in every input lane, for bumps and rebuilds (scratch).
    uniform_delta: Vec<f32>,
    /// The constant `uniform_delta` holds.
    uniform_value: f32,
}

/// Which per-input change [`SpatialPooler::update_column`] applies.
#[derive(Clone, Copy, Debug)]
enum Delta {
    /// This learning step's `learn_delta`.
    Learn,
    /// The same change for every synapse.
    Constant(f32),
}

impl Serialize for SpatialPooler {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let st = &self.state;
        StoredRef {
            params: &st.params,
            input_dimensions: &st.input_dimensions,
            num_inputs: st.num_inputs,
            num_columns: st.num_columns,
            potential_radius: st.potential_radius,
            connected_threshold: st.connected_threshold,
            pool_offsets: PoolOffsets {
                potential: &st.potential,
                row_words: st.row_words,
            },
            pool_inputs: PoolInputs {
                potential: &st.potential,
                row_words: st.row_words,
            },
            pool_perms: PoolPerms {
                potential: &st.potential,
                perms: &st.perms,
            },
            overlap_duty_cycles: &st.overlap_duty_cycles,
            active_duty_cycles: &st.active_duty_cycles,
            min_overlap_duty_cycles: &st.min_overlap_duty_cycles,
            boost_factors: &st.boost_factors,
            inhibition_radius: st.inhibition_radius,
            iteration_num: st.iteration_num,
            iteration_learn_num: st.iteration_learn_num,
            rng: &st.rng,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SpatialPooler {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = Stored::deserialize(deserializer)?;
        Self::from_stored(stored).map_err(serde::de::Error::custom)
    }
}

impl SpatialPooler {
    /// Build a pooler for inputs of shape `input_dimensions`, drawing the
    /// potential pools and initial permanences from `params.seed`
    /// (reference §3.2).
    pub fn new(
        input_dimensions: &[u32],
        params: SpatialPoolerParams,
    ) -> Result<Self, SpatialPoolerError> {
        let (num_inputs, num_columns) = validate(input_dimensions, &params)?;
        let n = num_columns as usize;
        let row_words = (num_inputs as usize).div_ceil(64);
        let state = State {
            input_dimensions: input_dimensions.to_vec(),
            num_inputs,
            num_columns,
            potential_radius: params.potential_radius.min(num_inputs),
            connected_threshold: params.syn_perm_connected - EPS,
            row_words,
            potential: vec![0; row_words * n],
            perms: vec![0.0; row_words * LANES_PER_WORD * n],
            overlap_duty_cycles: vec![0.0; n],
            active_duty_cycles: vec![0.0; n],
            min_overlap_duty_cycles: vec![0.0; n],
            boost_factors: vec![1.0; n],
            inhibition_radius: 0,
            iteration_num: 0,
            iteration_learn_num: 0,
            rng: Random::new(params.seed),
            params,
        };
        let mut sp = Self::with_empty_indices(state);
        sp.initialize_pools();
        sp.update_inhibition_radius();
        Ok(sp)
    }

    fn with_empty_indices(state: State) -> Self {
        let n = state.num_columns as usize;
        Self {
            connected: vec![0; state.potential.len()],
            num_connected: vec![0; n],
            input_bits: vec![0; state.row_words],
            keys: Vec::with_capacity(n),
            overlaps: vec![0; n],
            boosted: vec![0.0; n],
            winners: Vec::with_capacity(n),
            active_mask: vec![false; n],
            perm_scratch: Vec::new(),
            learn_delta: vec![0.0; state.row_words * LANES_PER_WORD],
            uniform_delta: vec![0.0; state.row_words * LANES_PER_WORD],
            uniform_value: 0.0,
            state,
        }
    }

    /// Restore from a deserialized state: check it, rebuild the bit rows.
    fn from_stored(state: Stored) -> Result<Self, SpatialPoolerError> {
        let (num_inputs, num_columns) = validate(&state.input_dimensions, &state.params)
            .map_err(|e| SpatialPoolerError::CorruptState(e.to_string()))?;
        let corrupt = |m: &str| Err(SpatialPoolerError::CorruptState(m.to_string()));
        let n = num_columns as usize;
        if state.num_inputs != num_inputs || state.num_columns != num_columns {
            return corrupt("sizes disagree with the dimensions");
        }
        if state.pool_offsets.len() != n + 1
            || state.pool_offsets[0] != 0
            || state.pool_offsets.windows(2).any(|w| w[0] > w[1])
            || *state.pool_offsets.last().unwrap_or(&0) as usize != state.pool_inputs.len()
            || state.pool_inputs.len() != state.pool_perms.len()
        {
            return corrupt("synapse arrays are inconsistent");
        }
        if state.pool_inputs.iter().any(|&i| i >= num_inputs)
            || state.pool_perms.iter().any(|p| !(0.0..=1.0).contains(p))
        {
            return corrupt("synapse out of range");
        }
        if [
            &state.overlap_duty_cycles,
            &state.active_duty_cycles,
            &state.min_overlap_duty_cycles,
            &state.boost_factors,
        ]
        .iter()
        .any(|v| v.len() != n)
        {
            return corrupt("per-column arrays have the wrong length");
        }
        let row_words = (num_inputs as usize).div_ceil(64);
        let row_lanes = row_words * LANES_PER_WORD;
        let mut potential = vec![0u64; row_words * n];
        let mut perms = vec![0.0f32; row_lanes * n];
        for c in 0..n {
            let synapses = state.pool_offsets[c] as usize..state.pool_offsets[c + 1] as usize;
            let pool = &state.pool_inputs[synapses.clone()];
            if pool.windows(2).any(|w| w[0] >= w[1]) {
                return corrupt("a potential pool is not strictly ascending");
            }
            let row = &mut potential[c * row_words..(c + 1) * row_words];
            for (&i, &perm) in pool.iter().zip(&state.pool_perms[synapses]) {
                row[(i / 64) as usize] |= 1u64 << (i % 64);
                perms[c * row_lanes + i as usize] = perm;
            }
        }
        let state = State {
            params: state.params,
            input_dimensions: state.input_dimensions,
            num_inputs,
            num_columns,
            potential_radius: state.potential_radius,
            connected_threshold: state.connected_threshold,
            row_words,
            potential,
            perms,
            overlap_duty_cycles: state.overlap_duty_cycles,
            active_duty_cycles: state.active_duty_cycles,
            min_overlap_duty_cycles: state.min_overlap_duty_cycles,
            boost_factors: state.boost_factors,
            inhibition_radius: state.inhibition_radius,
            iteration_num: state.iteration_num,
            iteration_learn_num: state.iteration_learn_num,
            rng: state.rng,
        };
        let mut sp = Self::with_empty_indices(state);
        sp.rebuild_connected_index();
        Ok(sp)
    }

    /// Recompute every column's connected row from the permanences.
    fn rebuild_connected_index(&mut self) {
        for c in 0..self.state.num_columns {
            self.update_column(c, Delta::Constant(0.0));
        }
    }

    /// Add the chosen per-input change to every synapse of `column`,
    /// clamping to [0, 1], and rewrite the column's connected row and count
    /// to match.
    #[inline]
    fn update_column(&mut self, column: u32, delta: Delta) {
        let st = &mut self.state;
        let c = column as usize;
        let words = c * st.row_words..(c + 1) * st.row_words;
        let lanes = words.start * LANES_PER_WORD..words.end * LANES_PER_WORD;
        let delta = match delta {
            Delta::Learn => &self.learn_delta,
            Delta::Constant(value) => {
                if value.to_bits() != self.uniform_value.to_bits() {
                    self.uniform_delta.fill(value);
                    self.uniform_value = value;
                }
                &self.uniform_delta
            }
        };
        self.num_connected[c] = dense_row::update_row(
            &mut st.perms[lanes],
            delta,
            &st.potential[words.clone()],
            st.connected_threshold,
            &mut self.connected[words],
        );
    }

    /// Column `c`'s dense permanences (64 per pool word).
    fn row_perms(&self, column: u32) -> &[f32] {
        let lanes = self.state.row_words * LANES_PER_WORD;
        &self.state.perms[column as usize * lanes..(column as usize + 1) * lanes]
    }

    /// The inputs of `column`'s potential pool, ascending.
    fn pool_inputs(&self, column: u32) -> impl Iterator<Item = u32> + '_ {
        let w = self.state.row_words;
        let c = column as usize;
        self.state.potential[c * w..(c + 1) * w]
            .iter()
            .enumerate()
            .flat_map(|(k, &bits)| SetBits(bits).map(move |b| 64 * k as u32 + b))
    }

    /// Draw every column's potential pool and initial permanences, column by
    /// column, in htm.core's draw order (reference §3.2).
    fn initialize_pools(&mut self) {
        let mut neighbourhood = Vec::new();
        let mut chosen = Vec::new();
        let row_lanes = self.state.row_words * LANES_PER_WORD;
        for c in 0..self.state.num_columns {
            let st = &mut self.state;
            let centre = map_column(c, &st.params.column_dimensions, &st.input_dimensions);
            neighbourhood.clear();
            neighbourhood.extend(Neighbourhood::new(
                &st.input_dimensions,
                centre,
                st.potential_radius,
                st.params.wrap_around,
            ));
            let num_potential =
                (neighbourhood.len() as f32 * st.params.potential_pct).round() as usize;
            chosen.clear();
            chosen.extend(st.rng.sample(&neighbourhood, num_potential));
            chosen.sort_unstable();
            let connected = st.params.syn_perm_connected;
            let row = &mut st.potential[c as usize * st.row_words..];
            let perms = &mut st.perms[c as usize * row_lanes..];
            for &input in &chosen {
                let perm = if st.rng.next_f64() <= INIT_CONNECTED_PCT {
                    st.rng.real_range(connected, 1.0)
                } else {
                    st.rng.real_range(0.0, connected)
                };
                row[(input / 64) as usize] |= 1u64 << (input % 64);
                perms[input as usize] = perm.clamp(0.0, 1.0);
            }
            self.update_column(c, Delta::Constant(0.0));
            self.raise_permanences_to_threshold(c);
        }
    }

    /// Number of inputs (bits of the input SDR).
    pub fn num_inputs(&self) -> u32 {
        self.state.num_inputs
    }

    /// Number of columns (bits of the output SDR).
    pub fn num_columns(&self) -> u32 {
        self.state.num_columns
    }

    /// The parameters this pooler was built with.
    pub fn params(&self) -> &SpatialPoolerParams {
        &self.state.params
    }

    /// Shape of the input space.
    pub fn input_dimensions(&self) -> &[u32] {
        &self.state.input_dimensions
    }

    /// Raw (unboosted) overlap of every column in the last `compute` (zeros
    /// before the first compute and right after deserialization).
    pub fn overlaps(&self) -> &[u32] {
        &self.overlaps
    }

    /// Boost factor of every column (1 while boosting is off).
    pub fn boost_factors(&self) -> &[f32] {
        &self.state.boost_factors
    }

    /// How often each column has been active (moving average).
    pub fn active_duty_cycles(&self) -> &[f32] {
        &self.state.active_duty_cycles
    }

    /// How often each column has had a non-zero overlap (moving average).
    pub fn overlap_duty_cycles(&self) -> &[f32] {
        &self.state.overlap_duty_cycles
    }

    /// Overlap duty cycle below which a column is bumped.
    pub fn min_overlap_duty_cycles(&self) -> &[f32] {
        &self.state.min_overlap_duty_cycles
    }

    /// Current inhibition radius (in columns).
    pub fn inhibition_radius(&self) -> u32 {
        self.state.inhibition_radius
    }

    /// Calls to `compute` so far, learning or not.
    pub fn iteration_num(&self) -> u32 {
        self.state.iteration_num
    }

    /// Calls to `compute` with learning so far.
    pub fn iteration_learn_num(&self) -> u32 {
        self.state.iteration_learn_num
    }

    /// The potential pool of `column` as (input, permanence), inputs
    /// ascending. For tests and diagnostics (allocates).
    pub fn permanences(&self, column: u32) -> Vec<(u32, f32)> {
        let perms = self.row_perms(column);
        self.pool_inputs(column)
            .map(|i| (i, perms[i as usize]))
            .collect()
    }

    /// Total number of connected synapses over all columns.
    pub fn num_connected_synapses(&self) -> usize {
        self.num_connected.iter().map(|&n| n as usize).sum()
    }

    /// Approximate heap bytes held by this pooler.
    pub fn memory_bytes(&self) -> usize {
        fn bytes<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        let st = &self.state;
        bytes(&st.input_dimensions)
            + bytes(&st.params.column_dimensions)
            + bytes(&st.potential)
            + bytes(&st.perms)
            + bytes(&st.overlap_duty_cycles)
            + bytes(&st.active_duty_cycles)
            + bytes(&st.min_overlap_duty_cycles)
            + bytes(&st.boost_factors)
            + 624 * 4 // generator state
            + bytes(&self.connected)
            + bytes(&self.num_connected)
            + bytes(&self.input_bits)
            + bytes(&self.keys)
            + bytes(&self.overlaps)
            + bytes(&self.boosted)
            + bytes(&self.winners)
            + bytes(&self.active_mask)
            + bytes(&self.perm_scratch)
            + bytes(&self.learn_delta)
            + bytes(&self.uniform_delta)
    }

    /// Map `input` to active columns, written (ascending) into `active`, and
    /// learn from it if `learn` (reference §3.3).
    ///
    /// `active` is resized to [`num_columns`](Self::num_columns) bits if it
    /// has another size; once it has, no allocation happens here. With
    /// `learn = false` no learned state changes (permanences, duty cycles,
    /// boost factors); only the iteration counter advances, as in htm.core.
    ///
    /// # Panics
    /// If `input.size()` differs from [`num_inputs`](Self::num_inputs).
    pub fn compute(&mut self, input: &Sdr, learn: bool, active: &mut Sdr) {
        assert_eq!(
            input.size(),
            self.state.num_inputs,
            "spatial pooler input has the wrong size"
        );
        self.state.iteration_num += 1;
        if learn {
            self.state.iteration_learn_num += 1;
        }
        self.compute_overlaps(input);
        self.inhibit_columns();
        if learn {
            self.learn();
        }
        if active.size() != self.state.num_columns {
            *active = Sdr::new(self.state.num_columns);
        }
        active.set_sorted_indices(&self.winners);
    }

    /// Raw overlaps: per column, the population count of its connected row
    /// AND the input bits. Leaves the input bits in `input_bits`.
    fn compute_overlaps(&mut self, input: &Sdr) {
        self.input_bits.fill(0);
        for &i in input.indices() {
            self.input_bits[(i / 64) as usize] |= 1u64 << (i % 64);
        }
        overlap_counts(
            &self.connected,
            &self.input_bits,
            self.state.row_words,
            &mut self.overlaps,
        );
    }

    /// Boosted overlaps (reference §3.3 step 3), for the inhibition rules
    /// that rank by them.
    fn compute_boosted_overlaps(&mut self) {
        let st = &self.state;
        if st.params.boost_strength < EPS {
            for (b, &o) in self.boosted.iter_mut().zip(&self.overlaps) {
                *b = o as f32;
            }
        } else {
            for ((b, &o), &f) in self
                .boosted
                .iter_mut()
                .zip(&self.overlaps)
                .zip(&st.boost_factors)
            {
                *b = o as f32 * f;
            }
        }
    }

    /// Target density of active columns for the current inhibition radius
    /// (reference §3.4).
    fn density(&self) -> f32 {
        let p = &self.state.params;
        if p.num_active_columns_per_inh_area == 0 {
            return p.local_area_density;
        }
        let area = inhibition_area(&p.column_dimensions, self.state.inhibition_radius);
        (p.num_active_columns_per_inh_area as f32 / area).min(MAX_LOCAL_AREA_DENSITY)
    }

    fn uses_global_inhibition(&self) -> bool {
        let st = &self.state;
        st.params.global_inhibition
            || st.inhibition_radius > *st.params.column_dimensions.iter().max().unwrap_or(&0)
    }

    fn inhibit_columns(&mut self) {
        let density = self.density();
        let threshold = self.state.params.stimulus_threshold as f32;
        if self.uses_global_inhibition() {
            let k = (density * self.state.num_columns as f32) as usize;
            if self.state.params.boost_strength < EPS {
                // Unboosted: the boosted overlaps are the integer overlaps,
                // so rank those directly.
                inhibit_global_unboosted(
                    &self.overlaps,
                    k,
                    threshold,
                    &mut self.keys,
                    &mut self.winners,
                );
                return;
            }
            self.compute_boosted_overlaps();
            inhibit_global(
                &self.boosted,
                k,
                threshold,
                &mut self.keys,
                &mut self.winners,
            );
        } else {
            self.compute_boosted_overlaps();
            self.inhibit_local(density, threshold);
        }
    }

    /// Local inhibition (reference §3.4): a column wins if fewer than the
    /// desired number of its neighbours beat it.
    fn inhibit_local(&mut self, density: f32, threshold: f32) {
        let st = &self.state;
        let dims = &st.params.column_dimensions;
        let radius = st.inhibition_radius;
        self.winners.clear();
        self.active_mask.fill(false);
        for c in 0..st.num_columns {
            let mine = self.boosted[c as usize];
            if mine < threshold {
                continue;
            }
            let hood = Neighbourhood::new(dims, c, radius, st.params.wrap_around);
            let num_neighbours = hood.len() - 1;
            let num_desired = (0.5 + density * (num_neighbours + 1) as f32) as usize;
            let mut beaten_by = 0;
            for n in hood.filter(|&n| n != c) {
                let theirs = self.boosted[n as usize];
                if theirs > mine || (theirs == mine && self.active_mask[n as usize]) {
                    beaten_by += 1;
                    if beaten_by >= num_desired {
                        break;
                    }
                }
            }
            if beaten_by < num_desired {
                self.active_mask[c as usize] = true;
                self.winners.push(c);
            }
        }
    }

    /// The learning half of `compute` (reference §3.3 step 5).
    fn learn(&mut self) {
        self.fill_learn_delta();
        for w in 0..self.winners.len() {
            let c = self.winners[w];
            self.adapt_segment(c);
            self.raise_permanences_to_threshold(c);
        }
        let period = self
            .state
            .params
            .duty_cycle_period
            .min(self.state.iteration_num);
        // The overlap duty cycles in one branch-free pass: `dc * decay`, then
        // `+ 1/period` where the column overlapped. Adding 0.0 elsewhere
        // leaves `dc * decay` (never −0.0) unchanged, so this equals the
        // two-pass update bit for bit.
        let decay = (period - 1) as f32 / period as f32;
        let increment = 1.0f32 / period as f32;
        for (dc, &o) in self
            .state
            .overlap_duty_cycles
            .iter_mut()
            .zip(&self.overlaps)
        {
            *dc = *dc * decay + if o > 0 { increment } else { 0.0 };
        }
        update_duty_cycles(
            &mut self.state.active_duty_cycles,
            self.winners.iter().map(|&c| c as usize),
            period,
        );
        self.bump_weak_columns();
        self.update_boost_factors();
        if self.state.iteration_num % UPDATE_PERIOD == 0 {
            self.update_inhibition_radius();
            self.update_min_duty_cycles();
        }
    }

    /// Spread the input bits into `learn_delta`: `+syn_perm_active_inc` on
    /// active inputs, `-syn_perm_inactive_dec` on the others.
    fn fill_learn_delta(&mut self) {
        let inc = self.state.params.syn_perm_active_inc;
        let dec = self.state.params.syn_perm_inactive_dec;
        for (lanes, &active) in self
            .learn_delta
            .chunks_exact_mut(LANES_PER_WORD)
            .zip(&self.input_bits)
        {
            for (j, d) in lanes.iter_mut().enumerate() {
                *d = if active >> j & 1 != 0 { inc } else { -dec };
            }
        }
    }

    /// Hebbian update of a winning column: synapses on active inputs (the
    /// bits in `input_bits`, spread into `learn_delta` by
    /// [`Self::fill_learn_delta`])
    /// gain `syn_perm_active_inc`, the others lose `syn_perm_inactive_dec`
    /// (reference §2 `adapt_segment`, no pruning; permanences clamped to
    /// [0, 1] as in `update_permanence`).
    fn adapt_segment(&mut self, column: u32) {
        self.update_column(column, Delta::Learn);
    }

    /// Add `delta` to every permanence of `column` (reference §2
    /// `bump_segment`).
    fn bump_segment(&mut self, column: u32, delta: f32) {
        self.update_column(column, Delta::Constant(delta));
    }

    /// Make sure `column` has at least `stimulus_threshold` connected
    /// synapses by raising all its permanences by the same amount
    /// (reference §2 `raise_permanences_to_threshold`).
    fn raise_permanences_to_threshold(&mut self, column: u32) {
        let wanted = self.state.params.stimulus_threshold as usize;
        if wanted == 0 || self.num_connected[column as usize] as usize >= wanted {
            return;
        }
        let mut scratch = std::mem::take(&mut self.perm_scratch);
        scratch.clear();
        let perms = self.row_perms(column);
        scratch.extend(self.pool_inputs(column).map(|i| perms[i as usize]));
        self.perm_scratch = scratch;
        if self.perm_scratch.is_empty() {
            return;
        }
        let k = wanted.min(self.perm_scratch.len());
        let (_, kth, _) = self
            .perm_scratch
            .select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let increment = self.state.connected_threshold - *kth;
        if increment > 0.0 {
            self.bump_segment(column, increment);
        }
    }

    /// Bump every column whose overlap duty cycle fell below its minimum
    /// (reference §3.3 step 5c).
    fn bump_weak_columns(&mut self) {
        let delta = self.state.params.syn_perm_connected / 10.0;
        for c in 0..self.state.num_columns {
            let i = c as usize;
            if self.state.overlap_duty_cycles[i] < self.state.min_overlap_duty_cycles[i] {
                self.bump_segment(c, delta);
            }
        }
    }

    /// Recompute the boost factors from the active duty cycles (reference
    /// §3.3 step 5d).
    fn update_boost_factors(&mut self) {
        let strength = self.state.params.boost_strength;
        if strength < EPS {
            return;
        }
        if self.state.params.global_inhibition {
            let target = self.density();
            let st = &mut self.state;
            for (b, &dc) in st.boost_factors.iter_mut().zip(&st.active_duty_cycles) {
                *b = boost_factor(target, dc, strength);
            }
            return;
        }
        let st = &mut self.state;
        let dims = &st.params.column_dimensions;
        for c in 0..st.num_columns {
            let mut sum = 0.0f32;
            let mut count = 0u32;
            for n in Neighbourhood::new(dims, c, st.inhibition_radius, st.params.wrap_around)
                .filter(|&n| n != c)
            {
                sum += st.active_duty_cycles[n as usize];
                count += 1;
            }
            let own = st.active_duty_cycles[c as usize];
            let target = (sum + own) / (count + 1) as f32;
            st.boost_factors[c as usize] = boost_factor(target, own, strength);
        }
    }

    /// Minimum overlap duty cycles (reference §3.3 step 5e): a fraction of
    /// the largest overlap duty cycle, over all columns (global) or over
    /// each column's neighbourhood (local).
    fn update_min_duty_cycles(&mut self) {
        let global = self.uses_global_inhibition();
        let st = &mut self.state;
        let pct = st.params.min_pct_overlap_duty_cycles;
        if global {
            let max = st
                .overlap_duty_cycles
                .iter()
                .copied()
                .fold(0.0f32, f32::max);
            st.min_overlap_duty_cycles.fill(pct * max);
            return;
        }
        let dims = &st.params.column_dimensions;
        for c in 0..st.num_columns {
            let max = Neighbourhood::new(dims, c, st.inhibition_radius, st.params.wrap_around)
                .map(|n| st.overlap_duty_cycles[n as usize])
                .fold(0.0f32, f32::max);
            st.min_overlap_duty_cycles[c as usize] = pct * max;
        }
    }

    /// Inhibition radius (reference §3.5): all columns when global; else the
    /// average connected span of the columns, in column units.
    fn update_inhibition_radius(&mut self) {
        let st = &self.state;
        let dims = &st.params.column_dimensions;
        if st.params.global_inhibition {
            self.state.inhibition_radius = dims.iter().copied().max().unwrap_or(0);
            return;
        }
        let mut total_span = 0.0f32;
        for c in 0..st.num_columns {
            total_span += self.connected_span(c);
        }
        let avg_span = total_span / st.num_columns as f32;
        let diameter = avg_span * avg_columns_per_input(dims, &st.input_dimensions);
        let radius = ((diameter - 1.0) / 2.0).max(1.0);
        self.state.inhibition_radius = radius.round() as u32;
    }

    /// Mean over input dimensions of the extent (max − min + 1) of the
    /// column's connected inputs; 0 without connected synapses. "Connected"
    /// here is `permanence >= syn_perm_connected + EPS` (reference §3.5).
    fn connected_span(&self, column: u32) -> f32 {
        let st = &self.state;
        let dims = &st.input_dimensions;
        let threshold = st.params.syn_perm_connected + EPS;
        let mut lo = [u32::MAX; MAX_DIMENSIONS];
        let mut hi = [0u32; MAX_DIMENSIONS];
        let mut any = false;
        let perms = self.row_perms(column);
        for input in self.pool_inputs(column) {
            let perm = perms[input as usize];
            if perm < threshold {
                continue;
            }
            any = true;
            let coords = coordinates(input, dims);
            for d in 0..dims.len() {
                lo[d] = lo[d].min(coords[d]);
                hi[d] = hi[d].max(coords[d]);
            }
        }
        if !any {
            return 0.0;
        }
        let total: f32 = (0..dims.len()).map(|d| (hi[d] - lo[d] + 1) as f32).sum();
        total / dims.len() as f32
    }
}

impl SpatialPoolerParams {
    /// Check these parameters for an input of `input_dimensions` without
    /// building a pooler; returns the number of columns.
    pub fn validate(&self, input_dimensions: &[u32]) -> Result<u32, SpatialPoolerError> {
        validate(input_dimensions, self).map(|(_, columns)| columns)
    }
}

/// Check the parameters; return (number of inputs, number of columns).
fn validate(
    input_dimensions: &[u32],
    p: &SpatialPoolerParams,
) -> Result<(u32, u32), SpatialPoolerError> {
    let size = |dims: &[u32], field: &'static str| -> Result<u32, SpatialPoolerError> {
        if dims.is_empty() || dims.len() > MAX_DIMENSIONS {
            return Err(invalid(
                field,
                format!(
                    "must have 1 to {MAX_DIMENSIONS} dimensions, got {}",
                    dims.len()
                ),
            ));
        }
        if dims.contains(&0) {
            return Err(invalid(field, "every dimension must be at least 1"));
        }
        dims.iter()
            .try_fold(1u32, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n < u32::MAX)
            .ok_or_else(|| invalid(field, "too many elements"))
    };
    let num_inputs = size(input_dimensions, "input_dimensions")?;
    let num_columns = size(&p.column_dimensions, "column_dimensions")?;
    if p.column_dimensions.len() != input_dimensions.len() {
        return Err(invalid(
            "column_dimensions",
            format!(
                "must have the same number of dimensions as the input ({})",
                input_dimensions.len()
            ),
        ));
    }
    if !(p.potential_pct > 0.0 && p.potential_pct <= 1.0) {
        return Err(invalid("potential_pct", "must be in (0, 1]"));
    }
    let unit = |x: f32, field: &'static str| {
        if (0.0..=1.0).contains(&x) {
            Ok(())
        } else {
            Err(invalid(field, "must be in [0, 1]"))
        }
    };
    unit(p.syn_perm_inactive_dec, "syn_perm_inactive_dec")?;
    unit(p.syn_perm_active_inc, "syn_perm_active_inc")?;
    unit(p.syn_perm_connected, "syn_perm_connected")?;
    unit(p.min_pct_overlap_duty_cycles, "min_pct_overlap_duty_cycles")?;
    if p.duty_cycle_period == 0 {
        return Err(invalid("duty_cycle_period", "must be at least 1"));
    }
    if !(p.boost_strength >= 0.0 && p.boost_strength.is_finite()) {
        return Err(invalid("boost_strength", "must be a finite number >= 0"));
    }
    if !(p.local_area_density >= 0.0 && p.local_area_density <= MAX_LOCAL_AREA_DENSITY) {
        return Err(invalid("local_area_density", "must be in [0, 0.5]"));
    }
    let by_density = p.local_area_density > 0.0;
    let by_count = p.num_active_columns_per_inh_area > 0;
    if by_density == by_count {
        return Err(invalid(
            "local_area_density",
            "exactly one of local_area_density and num_active_columns_per_inh_area must be positive",
        ));
    }
    if p.global_inhibition {
        // Global inhibition: the area is all columns, the winner count fixed.
        let (field, density) = if by_density {
            ("local_area_density", p.local_area_density)
        } else {
            let d = p.num_active_columns_per_inh_area as f32 / num_columns as f32;
            (
                "num_active_columns_per_inh_area",
                d.min(MAX_LOCAL_AREA_DENSITY),
            )
        };
        if (density * num_columns as f32) as u32 == 0 {
            return Err(invalid(
                field,
                format!("selects no active column out of {num_columns}"),
            ));
        }
    }
    Ok((num_inputs, num_columns))
}

/// Global inhibition (reference §3.4): the `k` columns with the largest
/// boosted overlap (ties: larger index wins), minus those below `threshold`;
/// written ascending into `winners`. `keys` is scratch.
///
/// Each column becomes one `u64` key, the boosted overlap's total-order bits
/// above the column index, so "larger key" is exactly the ranking above and
/// the selection compares plain integers.
fn inhibit_global(
    boosted: &[f32],
    k: usize,
    threshold: f32,
    keys: &mut Vec<u64>,
    winners: &mut Vec<u32>,
) {
    winners.clear();
    keys.clear();
    keys.extend(
        boosted
            .iter()
            .enumerate()
            .map(|(c, &b)| (u64::from(total_order_key(b)) << 32) | c as u64),
    );
    let k = k.min(keys.len());
    if k == 0 {
        return;
    }
    let n = keys.len();
    if k < n {
        keys.select_nth_unstable(n - k);
    }
    // Columns below the threshold rank below every column above it, so
    // dropping them from the whole top-k equals dropping from its low end.
    winners.extend(
        keys[n - k..]
            .iter()
            .map(|&key| key as u32)
            .filter(|&c| boosted[c as usize] >= threshold),
    );
    winners.sort_unstable();
}

/// Per column, the population count of its `row_words`-word row of
/// `connected` AND `input_bits`, into `overlaps`.
///
/// Uses the CPU's `popcnt` instruction when it has one (checked at run
/// time, so the binary still runs on x86-64 CPUs without it); the result is
/// the same integer either way.
fn overlap_counts(connected: &[u64], input_bits: &[u64], row_words: usize, overlaps: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the `popcnt` target feature was just detected on the
            // running CPU, which is the only requirement of the call.
            unsafe { overlap_counts_popcnt(connected, input_bits, row_words, overlaps) };
            return;
        }
    }
    overlap_counts_portable(connected, input_bits, row_words, overlaps);
}

#[inline(always)]
fn overlap_counts_portable(
    connected: &[u64],
    input_bits: &[u64],
    row_words: usize,
    overlaps: &mut [u32],
) {
    let input_bits = &input_bits[..row_words];
    for (overlap, row) in overlaps.iter_mut().zip(connected.chunks_exact(row_words)) {
        *overlap = row
            .iter()
            .zip(input_bits)
            .map(|(&c, &i)| (c & i).count_ones())
            .sum();
    }
}

/// [`overlap_counts_portable`] compiled with the `popcnt` instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn overlap_counts_popcnt(
    connected: &[u64],
    input_bits: &[u64],
    row_words: usize,
    overlaps: &mut [u32],
) {
    overlap_counts_portable(connected, input_bits, row_words, overlaps);
}

/// [`inhibit_global`] for unboosted overlaps (`boosted[c] == overlaps[c] as
/// f32`), by counting instead of selecting: the same winners, in the same
/// (ascending) order. `hist` is scratch.
///
/// The ranking is by overlap, ties to the larger column index. With `t` the
/// largest overlap such that at least `k` columns reach it, the top `k` are
/// every column above `t` plus the highest-indexed columns at exactly `t`.
fn inhibit_global_unboosted(
    overlaps: &[u32],
    k: usize,
    threshold: f32,
    hist: &mut Vec<u64>,
    winners: &mut Vec<u32>,
) {
    winners.clear();
    let n = overlaps.len();
    let k = k.min(n);
    if k == 0 {
        return;
    }
    let max = overlaps.iter().copied().max().unwrap_or(0) as usize;
    hist.clear();
    hist.resize(max + 1, 0);
    for &o in overlaps {
        hist[o as usize] += 1;
    }
    // Columns strictly above `t`, and `t` itself.
    let mut above = 0usize;
    let mut t = max;
    while above + (hist[t] as usize) < k {
        above += hist[t] as usize;
        t -= 1; // cannot pass 0: all n >= k columns are at 0 or above
    }
    // The `k - above` highest-indexed columns at `t` win: find the lowest.
    let mut at_t = k - above;
    let mut cut = n;
    while at_t > 0 {
        cut -= 1;
        if overlaps[cut] as usize == t {
            at_t -= 1;
        }
    }
    let t = t as u32;
    winners.extend(
        overlaps
            .iter()
            .enumerate()
            .filter(|&(c, &o)| (o > t || (o == t && c >= cut)) && o as f32 >= threshold)
            .map(|(c, _)| c as u32),
    );
}

/// A `u32` whose unsigned order is `f32::total_cmp`'s order.
#[inline]
fn total_order_key(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Exponential moving average step of duty cycles (reference §3.3 step 5b):
/// every value decays by `(period - 1) / period`, then each column in
/// `events` gains `1 / period` (f32 throughout).
fn update_duty_cycles(duty_cycles: &mut [f32], events: impl Iterator<Item = usize>, period: u32) {
    debug_assert!(period > 0);
    let decay = (period - 1) as f32 / period as f32;
    let increment = 1.0f32 / period as f32;
    for dc in duty_cycles.iter_mut() {
        *dc *= decay;
    }
    for c in events {
        duty_cycles[c] += increment;
    }
}

/// htm.core's boost: `exp((target_density - duty_cycle) * strength)`, f32.
fn boost_factor(target_density: f32, active_duty_cycle: f32, strength: f32) -> f32 {
    ((target_density - active_duty_cycle) * strength).exp()
}

/// Number of columns in an inhibition area of `radius`:
/// `Π_d min(dim_d, 2·radius + 1)` (reference §3.3 step 5d / §3.4).
fn inhibition_area(column_dimensions: &[u32], radius: u32) -> f32 {
    let side = 2 * u64::from(radius) + 1;
    column_dimensions
        .iter()
        .map(|&d| u64::from(d).min(side))
        .product::<u64>() as f32
}

/// `mean_d(column_dim_d / input_dim_d)` in f32 (reference §3.5).
fn avg_columns_per_input(column_dimensions: &[u32], input_dimensions: &[u32]) -> f32 {
    let sum: f32 = column_dimensions
        .iter()
        .zip(input_dimensions)
        .map(|(&c, &i)| c as f32 / i as f32)
        .sum();
    sum / column_dimensions.len() as f32
}

/// Row-major coordinates (last dimension fastest) of flat `index`.
fn coordinates(mut index: u32, dims: &[u32]) -> [u32; MAX_DIMENSIONS] {
    let mut coords = [0u32; MAX_DIMENSIONS];
    for d in (0..dims.len()).rev() {
        coords[d] = index % dims[d];
        index /= dims[d];
    }
    coords
}

/// The input index at the centre of `column`'s receptive field: per
/// dimension `floor((coord + 0.5) * (input_dim / column_dim))` in f32
/// (reference §3.2 step 2).
fn map_column(column: u32, column_dimensions: &[u32], input_dimensions: &[u32]) -> u32 {
    let coords = coordinates(column, column_dimensions);
    let mut index = 0u32;
    for (d, (&cd, &id)) in column_dimensions.iter().zip(input_dimensions).enumerate() {
        let ratio = id as f32 / cd as f32;
        let centre = ((coords[d] as f32 + 0.5) * ratio).floor() as u32;
        index = index * id + centre.min(id - 1);
    }
    index
}

/// The flat indices within `radius` of `centre` in a space of shape `dims`,
/// centre included, in htm.core's order (reference §3.2 step 3): per
/// dimension the offsets run upward from `-radius`; with wrap-around
/// coordinates are taken modulo the dimension and at most `dim` offsets are
/// used, without it the offsets stop at the edges; row-major over the offset
/// vector (last dimension fastest). Every index appears at most once.
#[derive(Clone, Debug)]
struct Neighbourhood<'a> {
    dims: &'a [u32],
    centre: [i64; MAX_DIMENSIONS],
    lo: [i64; MAX_DIMENSIONS],
    hi: [i64; MAX_DIMENSIONS],
    offset: [i64; MAX_DIMENSIONS],
    wrap: bool,
    remaining: usize,
}

impl<'a> Neighbourhood<'a> {
    fn new(dims: &'a [u32], centre: u32, radius: u32, wrap: bool) -> Self {
        let coords = coordinates(centre, dims);
        let r = i64::from(radius);
        let mut hood = Self {
            dims,
            centre: [0; MAX_DIMENSIONS],
            lo: [0; MAX_DIMENSIONS],
            hi: [0; MAX_DIMENSIONS],
            offset: [0; MAX_DIMENSIONS],
            wrap,
            remaining: 1,
        };
        for (d, &dim) in dims.iter().enumerate() {
            let (c, dim) = (i64::from(coords[d]), i64::from(dim));
            let (lo, hi) = if wrap {
                (-r, r.min(dim - 1 - r))
            } else {
                ((-r).max(-c), r.min(dim - 1 - c))
            };
            hood.centre[d] = c;
            hood.lo[d] = lo;
            hood.hi[d] = hi;
            hood.offset[d] = lo;
            hood.remaining *= (hi - lo + 1) as usize;
        }
        hood
    }
}

impl Iterator for Neighbourhood<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut index = 0i64;
        for (d, &dim) in self.dims.iter().enumerate() {
            let dim = i64::from(dim);
            let mut x = self.centre[d] + self.offset[d];
            if self.wrap {
                x = x.rem_euclid(dim);
            }
            index = index * dim + x;
        }
        // Advance the odometer, last dimension fastest.
        for d in (0..self.dims.len()).rev() {
            if self.offset[d] < self.hi[d] {
                self.offset[d] += 1;
                break;
            }
            self.offset[d] = self.lo[d];
        }
        Some(index as u32)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Neighbourhood<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// htm.core's `SpatialPoolerTest.ExactOutput` parameters (reference §10).
    fn exact_output_params() -> SpatialPoolerParams {
        SpatialPoolerParams {
            column_dimensions: vec![200],
            potential_radius: 99_999,
            potential_pct: 0.5,
            global_inhibition: true,
            local_area_density: 0.05,
            num_active_columns_per_inh_area: 0,
            stimulus_threshold: 3,
            syn_perm_inactive_dec: 0.008,
            syn_perm_active_inc: 0.05,
            syn_perm_connected: 0.1,
            min_pct_overlap_duty_cycles: 0.001,
            duty_cycle_period: 200,
            boost_strength: 10.0,
            seed: 42,
            wrap_around: true,
        }
    }

    #[test]
    fn exact_output_matches_htm_core() {
        let mut sp = SpatialPooler::new(&[1000], exact_output_params()).unwrap();
        let mut input = Sdr::new(1000);
        let mut active = Sdr::new(200);
        for i in 0..1000u32 {
            input.randomize(0.15, &mut Random::new(i + 1));
            sp.compute(&input, true, &mut active);
        }
        assert_eq!(
            active.indices(),
            &[4, 64, 74, 78, 85, 113, 125, 126, 127, 153]
        );
    }

    /// A small global pooler: 100 inputs, 50 columns, 5 winners.
    fn small_params() -> SpatialPoolerParams {
        SpatialPoolerParams {
            column_dimensions: vec![50],
            potential_radius: 100,
            potential_pct: 0.5,
            local_area_density: 0.1,
            seed: 7,
            ..SpatialPoolerParams::default()
        }
    }

    fn random_input(size: u32, sparsity: f32, seed: u32) -> Sdr {
        let mut sdr = Sdr::new(size);
        sdr.randomize(sparsity, &mut Random::new(seed));
        sdr
    }

    /// Overlaps recomputed from the permanences alone.
    fn brute_force_overlaps(sp: &SpatialPooler, input: &Sdr) -> Vec<u32> {
        (0..sp.num_columns())
            .map(|c| {
                sp.permanences(c)
                    .iter()
                    .filter(|&&(i, p)| p >= sp.state.connected_threshold && input.contains(i))
                    .count() as u32
            })
            .collect()
    }

    fn brute_force_connected(sp: &SpatialPooler) -> usize {
        (0..sp.num_columns())
            .flat_map(|c| sp.permanences(c))
            .filter(|&(_, p)| p >= sp.state.connected_threshold)
            .count()
    }

    /// Every pool synapse's permanence, column after column, inputs ascending.
    fn pool_perms(sp: &SpatialPooler) -> Vec<f32> {
        (0..sp.num_columns())
            .flat_map(|c| sp.permanences(c))
            .map(|(_, p)| p)
            .collect()
    }

    /// The permanence of the `k`-th pool synapse of `column`.
    fn pool_perm_mut(sp: &mut SpatialPooler, column: u32, k: usize) -> &mut f32 {
        let input = sp.pool_inputs(column).nth(k).unwrap() as usize;
        let lanes = sp.state.row_words * LANES_PER_WORD;
        &mut sp.state.perms[column as usize * lanes + input]
    }

    #[test]
    fn default_params_are_the_python_defaults_with_global_inhibition() {
        let p = SpatialPoolerParams::default();
        assert_eq!(p.column_dimensions, [2048]);
        assert!(p.global_inhibition);
        assert_eq!((p.potential_radius, p.potential_pct), (16, 0.5));
        assert_eq!(
            (p.syn_perm_active_inc, p.syn_perm_inactive_dec),
            (0.1, 0.01)
        );
        assert_eq!((p.local_area_density, p.duty_cycle_period), (0.02, 1000));
        assert!(SpatialPooler::new(&[400], p).is_ok());
    }

    #[test]
    fn params_json_defaults_missing_fields_and_rejects_unknown_ones() {
        let p: SpatialPoolerParams = serde_json::from_str(r#"{"seed": 9}"#).unwrap();
        assert_eq!(p.seed, 9);
        assert_eq!(p.column_dimensions, [2048]);
        assert!(serde_json::from_str::<SpatialPoolerParams>(r#"{"sede": 9}"#).is_err());
    }

    #[test]
    fn invalid_parameters_name_their_field() {
        let field_of = |inputs: &[u32], p: SpatialPoolerParams| match SpatialPooler::new(inputs, p)
        {
            Err(SpatialPoolerError::InvalidParameter { field, .. }) => field,
            other => panic!("expected an invalid parameter, got {other:?}"),
        };
        let base = small_params;
        assert_eq!(field_of(&[], base()), "input_dimensions");
        assert_eq!(field_of(&[100, 0], base()), "input_dimensions");
        let p = SpatialPoolerParams {
            column_dimensions: vec![],
            ..base()
        };
        assert_eq!(field_of(&[100], p), "column_dimensions");
        let p = SpatialPoolerParams {
            column_dimensions: vec![5, 10],
            ..base()
        };
        assert_eq!(field_of(&[100], p), "column_dimensions");
        let p = SpatialPoolerParams {
            potential_pct: 0.0,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "potential_pct");
        let p = SpatialPoolerParams {
            potential_pct: 1.5,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "potential_pct");
        let p = SpatialPoolerParams {
            syn_perm_connected: -0.1,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "syn_perm_connected");
        let p = SpatialPoolerParams {
            syn_perm_active_inc: f32::NAN,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "syn_perm_active_inc");
        let p = SpatialPoolerParams {
            syn_perm_inactive_dec: 2.0,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "syn_perm_inactive_dec");
        let p = SpatialPoolerParams {
            duty_cycle_period: 0,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "duty_cycle_period");
        let p = SpatialPoolerParams {
            boost_strength: -1.0,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "boost_strength");
        let p = SpatialPoolerParams {
            local_area_density: 0.6,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "local_area_density");
        // Both or neither of the two density settings.
        let p = SpatialPoolerParams {
            num_active_columns_per_inh_area: 5,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "local_area_density");
        let p = SpatialPoolerParams {
            local_area_density: 0.0,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "local_area_density");
        // floor(0.01 * 50) = 0 winners.
        let p = SpatialPoolerParams {
            local_area_density: 0.01,
            ..base()
        };
        assert_eq!(field_of(&[100], p), "local_area_density");
        let p = SpatialPoolerParams {
            local_area_density: 0.0,
            num_active_columns_per_inh_area: 5,
            ..base()
        };
        assert!(SpatialPooler::new(&[100], p).is_ok());
        let err = SpatialPooler::new(
            &[100],
            SpatialPoolerParams {
                potential_pct: 0.0,
                ..base()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("potential_pct"), "{err}");
    }

    #[test]
    fn duty_cycle_step_decays_then_adds_one_over_period() {
        // Period 1 (the first step): the duty cycle becomes exactly 0 or 1.
        let mut dc = [0.3f32, 0.7, 0.0];
        update_duty_cycles(&mut dc, [0usize, 2].into_iter(), 1);
        assert_eq!(dc, [1.0, 0.0, 1.0]);
        let mut dc = [0.4f32, 0.8];
        update_duty_cycles(&mut dc, [1usize].into_iter(), 4);
        assert!(
            (dc[0] - 0.3).abs() < 1e-6 && (dc[1] - 0.85).abs() < 1e-6,
            "{dc:?}"
        );
    }

    #[test]
    fn duty_cycle_period_is_the_iteration_count_until_the_window_is_full() {
        let params = SpatialPoolerParams {
            duty_cycle_period: 3,
            ..small_params()
        };
        let mut sp = SpatialPooler::new(&[100], params).unwrap();
        let mut active = Sdr::new(0);
        for step in 1..=6u32 {
            let before_active = sp.active_duty_cycles().to_vec();
            let before_overlap = sp.overlap_duty_cycles().to_vec();
            sp.compute(&random_input(100, 0.1, step), true, &mut active);
            let period = step.min(3) as f32;
            let decay = (period - 1.0) / period;
            for c in 0..50 {
                let won = active.contains(c as u32);
                let expected = before_active[c] * decay + if won { 1.0 / period } else { 0.0 };
                assert_eq!(
                    sp.active_duty_cycles()[c],
                    expected,
                    "step {step} column {c}"
                );
                let overlapped = sp.overlaps()[c] > 0;
                let expected =
                    before_overlap[c] * decay + if overlapped { 1.0 / period } else { 0.0 };
                assert_eq!(
                    sp.overlap_duty_cycles()[c],
                    expected,
                    "step {step} column {c}"
                );
            }
            if step == 1 {
                assert!(sp
                    .active_duty_cycles()
                    .iter()
                    .all(|&d| d == 0.0 || d == 1.0));
            }
        }
    }

    #[test]
    fn min_duty_cycles_update_every_fifty_iterations_from_the_global_max() {
        let mut sp = SpatialPooler::new(&[100], small_params()).unwrap();
        let mut active = Sdr::new(50);
        for step in 1..=49 {
            sp.compute(&random_input(100, 0.1, step), true, &mut active);
        }
        assert!(sp.min_overlap_duty_cycles().iter().all(|&m| m == 0.0));
        sp.compute(&random_input(100, 0.1, 50), true, &mut active);
        let max = sp
            .overlap_duty_cycles()
            .iter()
            .copied()
            .fold(0.0f32, f32::max);
        assert!(max > 0.0);
        let expected = 0.001f32 * max;
        assert!(sp.min_overlap_duty_cycles().iter().all(|&m| m == expected));
    }

    #[test]
    fn boost_factor_is_exponential_in_the_density_gap() {
        assert_eq!(boost_factor(0.1, 0.1, 10.0), 1.0);
        assert!((boost_factor(0.1, 0.3, 10.0) - (-2.0f32).exp()).abs() < 1e-7);
        assert!((boost_factor(0.1, 0.0, 10.0) - 1.0f32.exp()).abs() < 1e-6);
        assert!(boost_factor(0.1, 0.05, 3.0) > 1.0);
        assert!(boost_factor(0.1, 0.5, 3.0) < 1.0);
    }

    #[test]
    fn boost_factors_follow_the_active_duty_cycles_when_boosting_is_on() {
        let params = SpatialPoolerParams {
            boost_strength: 2.0,
            ..small_params()
        };
        let mut sp = SpatialPooler::new(&[100], params).unwrap();
        let mut active = Sdr::new(50);
        for step in 1..=5 {
            sp.compute(&random_input(100, 0.1, step), true, &mut active);
        }
        for c in 0..50 {
            let expected = boost_factor(0.1, sp.active_duty_cycles()[c], 2.0);
            assert_eq!(sp.boost_factors()[c], expected);
        }
        assert!(sp.boost_factors().iter().any(|&b| b != 1.0));

        // Boosting off: factors stay exactly 1.
        let mut sp = SpatialPooler::new(&[100], small_params()).unwrap();
        for step in 1..=5 {
            sp.compute(&random_input(100, 0.1, step), true, &mut active);
        }
        assert!(sp.boost_factors().iter().all(|&b| b == 1.0));
    }

    #[test]
    fn global_inhibition_takes_the_top_k_with_ties_to_the_larger_index() {
        let boosted = [1.0, 3.0, 3.0, 2.0, 3.0, 0.0];
        let mut winners = Vec::new();
        let mut keys = Vec::new();
        inhibit_global(&boosted, 2, 0.0, &mut keys, &mut winners);
        assert_eq!(winners, [2, 4]);
        inhibit_global(&boosted, 4, 0.0, &mut keys, &mut winners);
        assert_eq!(winners, [1, 2, 3, 4]);
        // Below the stimulus threshold: dropped even when in the top k.
        inhibit_global(&boosted, 4, 2.5, &mut keys, &mut winners);
        assert_eq!(winners, [1, 2, 4]);
        inhibit_global(&boosted, 10, 0.0, &mut keys, &mut winners);
        assert_eq!(winners, [0, 1, 2, 3, 4, 5]);
        inhibit_global(&[0.0; 4], 2, 0.0, &mut keys, &mut winners);
        assert_eq!(winners, [2, 3]);
        inhibit_global(&boosted, 0, 0.0, &mut keys, &mut winners);
        assert!(winners.is_empty());
    }

    #[test]
    fn total_order_keys_sort_like_total_cmp() {
        let mut xs = [
            f32::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-30,
            1.0,
            3.0,
            f32::INFINITY,
            -1e-30,
        ];
        xs.sort_by(f32::total_cmp);
        for w in xs.windows(2) {
            assert!(total_order_key(w[0]) < total_order_key(w[1]), "{w:?}");
        }
    }

    #[test]
    fn serialized_pool_inputs_list_every_column_pool_ascending() {
        let sp = SpatialPooler::new(&[100], small_params()).unwrap();
        let value = serde_json::to_value(&sp).unwrap();
        let stored: Vec<u32> = serde_json::from_value(value["pool_inputs"].clone()).unwrap();
        let expected: Vec<u32> = (0..50)
            .flat_map(|c| sp.permanences(c).into_iter().map(|(i, _)| i))
            .collect();
        assert_eq!(stored.len(), pool_perms(&sp).len());
        assert_eq!(stored, expected);
    }

    #[test]
    fn zero_overlap_columns_win_only_without_a_stimulus_threshold() {
        let empty = Sdr::new(100);
        let mut active = Sdr::new(50);
        let mut sp = SpatialPooler::new(&[100], small_params()).unwrap();
        sp.compute(&empty, true, &mut active);
        assert_eq!(active.count(), 5);
        // Ties among all-zero overlaps go to the highest indices.
        assert_eq!(active.indices(), &[45, 46, 47, 48, 49]);
        let params = SpatialPoolerParams {
            stimulus_threshold: 1,
            ..small_params()
        };
        let mut sp = SpatialPooler::new(&[100], params).unwrap();
        sp.compute(&empty, true, &mut active);
        assert_eq!(active.count(), 0);
    }

    #[test]
    fn centre_of_a_column_scales_its_coordinates_to_the_input() {
        assert_eq!(map_column(0, &[4], &[12]), 1);
        assert_eq!(map_column(3, &[4], &[12]), 10);
        assert_eq!(map_column(0, &[200], &[1000]), 2);
        // 2-D: column 5 of 2×4 is (1, 1) → input (4, 4) of 6×12.
        assert_eq!(map_column(5, &[2, 4], &[6, 12]), 4 * 12 + 4);
        // More columns than inputs.
        assert_eq!(map_column(7, &[8], &[4]), 3);
    }

    #[test]
    fn neighbourhood_order_and_edges_in_one_dimension() {
        let hood = |c, r, wrap| Neighbourhood::new(&[10], c, r, wrap).collect::<Vec<_>>();
        assert_eq!(hood(1, 2, true), [9, 0, 1, 2, 3]);
        assert_eq!(hood(1, 2, false), [0, 1, 2, 3]);
        assert_eq!(hood(8, 2, false), [6, 7, 8, 9]);
        // Radius as wide as the dimension: centre first, then upward, wrapping.
        assert_eq!(hood(3, 10, true), [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]);
        // 2r + 1 > dim: still every index exactly once.
        assert_eq!(hood(3, 7, true), [6, 7, 8, 9, 0, 1, 2, 3, 4, 5]);
        assert_eq!(hood(3, 0, true), [3]);
        assert_eq!(Neighbourhood::new(&[10], 3, 7, true).len(), 10);
    }

    #[test]
    fn neighbourhood_order_in_two_dimensions() {
        // 3×4 space; (1, 1) = 5 without wrap: rows 0..=2, cols 0..=2.
        let hood: Vec<u32> = Neighbourhood::new(&[3, 4], 5, 1, false).collect();
        assert_eq!(hood, [0, 1, 2, 4, 5, 6, 8, 9, 10]);
        // (0, 0) with wrap: rows 2, 0, 1 × cols 3, 0, 1.
        let hood: Vec<u32> = Neighbourhood::new(&[3, 4], 0, 1, true).collect();
        assert_eq!(hood, [11, 8, 9, 3, 0, 1, 7, 4, 5]);
    }

    #[test]
    fn potential_pool_is_a_sample_of_the_neighbourhood() {
        let params = SpatialPoolerParams {
            column_dimensions: vec![5],
            potential_radius: 3,
            potential_pct: 1.0,
            local_area_density: 0.2,
            ..SpatialPoolerParams::default()
        };
        let sp = SpatialPooler::new(&[20], params.clone()).unwrap();
        // Column 0's centre is floor(0.5 * 4) = 2; radius 3 wraps to 19.
        let inputs: Vec<u32> = sp.permanences(0).iter().map(|&(i, _)| i).collect();
        assert_eq!(inputs, [0, 1, 2, 3, 4, 5, 19]);
        let no_wrap = SpatialPoolerParams {
            wrap_around: false,
            ..params.clone()
        };
        let sp = SpatialPooler::new(&[20], no_wrap).unwrap();
        let inputs: Vec<u32> = sp.permanences(0).iter().map(|&(i, _)| i).collect();
        assert_eq!(inputs, [0, 1, 2, 3, 4, 5]);
        // Half of 7 rounds to 4 inputs, all within the neighbourhood.
        let half = SpatialPoolerParams {
            potential_pct: 0.5,
            ..params
        };
        let sp = SpatialPooler::new(&[20], half).unwrap();
        let pool = sp.permanences(0);
        assert_eq!(pool.len(), 4);
        assert!(pool
            .iter()
            .all(|&(i, _)| [0, 1, 2, 3, 4, 5, 19].contains(&i)));
        assert!(pool.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn potential_pool_in_two_dimensions_stays_in_the_window() {
        let params = SpatialPoolerParams {
            column_dimensions: vec![4, 4],
            potential_radius: 2,
            potential_pct: 1.0,
            local_area_density: 0.25,
            wrap_around: false,
            ..SpatialPoolerParams::default()
        };
        let sp = SpatialPooler::new(&[16, 16], params).unwrap();
        // Column (1, 2) has centre (6, 10); the window is rows 4..=8, cols 8..=12.
        let inputs: Vec<u32> = sp.permanences(6).iter().map(|&(i, _)| i).collect();
        let expected: Vec<u32> = (4..=8)
            .flat_map(|r| (8..=12).map(move |c| r * 16 + c))
            .collect();
        assert_eq!(inputs, expected);
    }

    #[test]
    fn initial_permanences_are_about_half_connected_and_in_range() {
        let params = SpatialPoolerParams {
            column_dimensions: vec![10],
            potential_radius: 1000,
            ..small_params()
        };
        let sp = SpatialPooler::new(&[1000], params).unwrap();
        assert_eq!(sp.num_connected_synapses(), brute_force_connected(&sp));
        for c in 0..10 {
            let pool = sp.permanences(c);
            assert_eq!(pool.len(), 500);
            assert!(pool.iter().all(|&(_, p)| (0.0..=1.0).contains(&p)));
            let connected = pool.iter().filter(|&&(_, p)| p >= 0.1).count();
            assert!((200..=300).contains(&connected), "column {c}: {connected}");
            // The unconnected draws are below 0.1, the connected ones spread above.
            assert!(pool.iter().any(|&(_, p)| p > 0.9));
            assert!(pool.iter().any(|&(_, p)| p < 0.01));
        }
    }

    #[test]
    fn initialization_raises_columns_to_the_stimulus_threshold() {
        let params = SpatialPoolerParams {
            potential_pct: 0.2,
            stimulus_threshold: 15,
            ..small_params()
        };
        let sp = SpatialPooler::new(&[100], params).unwrap();
        let threshold = sp.state.connected_threshold;
        let mut raised = 0;
        for c in 0..50 {
            let mut perms: Vec<f32> = sp.permanences(c).iter().map(|&(_, p)| p).collect();
            assert_eq!(perms.len(), 20);
            perms.sort_by(|a, b| b.total_cmp(a));
            // One bump by (threshold - 15th largest): in f32 the 15th largest
            // lands on the threshold or one rounding step below it (htm.core
            // bumps once and does not retry).
            let kth = perms[14];
            assert!(kth >= threshold - 1e-7, "column {c}: {kth}");
            if (kth - threshold).abs() <= 1e-7 {
                raised += 1;
            }
        }
        // About half of 20 synapses start connected: many columns needed
        // raising, and those sit exactly at the threshold now.
        assert!(raised > 10, "{raised}");
    }

    #[test]
    fn bumping_weak_columns_raises_all_their_permanences() {
        let mut sp = SpatialPooler::new(&[100], small_params()).unwrap();
        *pool_perm_mut(&mut sp, 3, 0) = 0.995;
        sp.rebuild_connected_index();
        let before: Vec<Vec<(u32, f32)>> = (0..50).map(|c| sp.permanences(c)).collect();
        sp.state.min_overlap_duty_cycles[3] = 0.5;
        sp.bump_weak_columns();
        for c in 0..50u32 {
            let after = sp.permanences(c);
            if c != 3 {
                assert_eq!(after, before[c as usize]);
                continue;
            }
            assert_eq!(after[0].1, 1.0, "clamped");
            for (&(_, old), &(_, new)) in before[3].iter().zip(&after) {
                assert_eq!(new, (old + 0.01).min(1.0));
            }
        }
        assert_eq!(sp.num_connected_synapses(), brute_force_connected(&sp));
    }

    #[test]
    fn adapting_rewards_active_inputs_and_punishes_the_rest() {
        let mut sp = SpatialPooler::new(&[100], small_params()).unwrap();
        // Pin one synapse at each clamp edge: the first is active (clamps at
        // 1), the second inactive (clamps at 0).
        *pool_perm_mut(&mut sp, 0, 0) = 0.95;
        *pool_perm_mut(&mut sp, 0, 1) = 0.005;
        sp.rebuild_connected_index();
        let pool = sp.permanences(0);
        let active: Vec<u32> = pool.iter().step_by(2).map(|&(i, _)| i).collect();
        sp.input_bits.fill(0);
        for &i in &active {
            sp.input_bits[(i / 64) as usize] |= 1 << (i % 64);
        }
        sp.fill_learn_delta();
        sp.adapt_segment(0);
        for (&(i, old), &(j, new)) in pool.iter().zip(&sp.permanences(0)) {
            assert_eq!(i, j);
            let expected = if active.contains(&i) {
                (old + 0.1).min(1.0)
            } else {
                (old - 0.01).max(0.0)
            };
            assert_eq!(new, expected, "input {i}");
        }
        assert_eq!(sp.permanences(0)[0].1, 1.0);
        assert_eq!(sp.permanences(0)[1].1, 0.0);
        assert_eq!(sp.num_connected_synapses(), brute_force_connected(&sp));
    }

    #[test]
    fn incremental_connected_index_matches_the_permanences() {
        let params = SpatialPoolerParams {
            boost_strength: 1.0,
            ..small_params()
        };
        let mut sp = SpatialPooler::new(&[100], params).unwrap();
        let mut active = Sdr::new(50);
        for step in 1..=300 {
            let input = random_input(100, 0.1, step);
            sp.compute(&input, true, &mut active);
            if step % 25 == 0 {
                let probe = random_input(100, 0.2, 10_000 + step);
                sp.compute(&probe, false, &mut active);
                assert_eq!(sp.overlaps(), brute_force_overlaps(&sp, &probe).as_slice());
                assert_eq!(sp.num_connected_synapses(), brute_force_connected(&sp));
            }
        }
    }

    #[test]
    fn inference_changes_no_learned_state() {
        let mut sp = SpatialPooler::new(&[100], small_params()).unwrap();
        let mut active = Sdr::new(50);
        for step in 1..=20 {
            sp.compute(&random_input(100, 0.1, step), true, &mut active);
        }
        let before = sp.clone();
        let mut first = Vec::new();
        for step in 1..=60 {
            sp.compute(&random_input(100, 0.1, 500 + step), false, &mut active);
            first.push(active.clone());
        }
        assert_eq!(sp.state.perms, before.state.perms);
        assert_eq!(sp.active_duty_cycles(), before.active_duty_cycles());
        assert_eq!(sp.overlap_duty_cycles(), before.overlap_duty_cycles());
        assert_eq!(
            sp.min_overlap_duty_cycles(),
            before.min_overlap_duty_cycles()
        );
        assert_eq!(sp.boost_factors(), before.boost_factors());
        assert_eq!(sp.state.rng, before.state.rng);
        assert_eq!(sp.iteration_learn_num(), 20);
        // Only the call counter moves (htm.core counts every call).
        assert_eq!(sp.iteration_num(), 80);
        // The same inputs again give the same outputs.
        for step in 1..=60 {
            sp.compute(&random_input(100, 0.1, 500 + step), false, &mut active);
            assert_eq!(active, first[step as usize - 1]);
        }
    }

    #[test]
    #[should_panic(expected = "wrong size")]
    fn input_of_the_wrong_size_panics() {
        let mut sp = SpatialPooler::new(&[100], small_params()).unwrap();
        sp.compute(&Sdr::new(99), true, &mut Sdr::new(50));
    }

    #[test]
    fn output_sdr_is_resized_to_the_column_count() {
        let mut sp = SpatialPooler::new(&[100], small_params()).unwrap();
        let mut active = Sdr::new(3);
        sp.compute(&random_input(100, 0.1, 1), true, &mut active);
        assert_eq!(active.size(), 50);
        assert_eq!(active.count(), 5);
    }

    #[test]
    fn serde_round_trip_continues_identically() {
        let params = SpatialPoolerParams {
            boost_strength: 3.0,
            ..small_params()
        };
        let mut sp = SpatialPooler::new(&[100], params).unwrap();
        let mut active = Sdr::new(50);
        for step in 1..=120 {
            sp.compute(&random_input(100, 0.1, step), true, &mut active);
        }
        let json = serde_json::to_string(&sp).unwrap();
        let mut restored: SpatialPooler = serde_json::from_str(&json).unwrap();
        assert_eq!(
            restored.num_connected_synapses(),
            sp.num_connected_synapses()
        );
        let mut other = Sdr::new(50);
        for step in 121..=300 {
            let input = random_input(100, 0.1, step);
            sp.compute(&input, true, &mut active);
            restored.compute(&input, true, &mut other);
            assert_eq!(active, other, "step {step}");
        }
        assert_eq!(
            serde_json::to_string(&sp).unwrap(),
            serde_json::to_string(&restored).unwrap()
        );
    }

    #[test]
    fn inconsistent_state_is_rejected_on_deserialization() {
        let sp = SpatialPooler::new(&[100], small_params()).unwrap();
        let mut value = serde_json::to_value(&sp).unwrap();
        value["pool_perms"].as_array_mut().unwrap().pop();
        let err = serde_json::from_value::<SpatialPooler>(value).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        let mut value = serde_json::to_value(&sp).unwrap();
        value["pool_perms"][0] = serde_json::json!(1.5);
        assert!(serde_json::from_value::<SpatialPooler>(value).is_err());
    }

    #[test]
    fn memory_estimate_covers_the_synapses() {
        let sp = SpatialPooler::new(&[100], small_params()).unwrap();
        let synapses = pool_perms(&sp).len();
        assert_eq!(synapses, 50 * 50);
        assert!(sp.memory_bytes() >= synapses * 8);
        assert!(sp.memory_bytes() < synapses * 40);
    }

    #[test]
    fn local_inhibition_counts_stronger_and_already_active_neighbours() {
        let params = SpatialPoolerParams {
            column_dimensions: vec![10],
            global_inhibition: false,
            local_area_density: 0.34,
            wrap_around: false,
            ..small_params()
        };
        let mut sp = SpatialPooler::new(&[20], params).unwrap();
        sp.state.inhibition_radius = 1;
        sp.boosted = vec![1.0, 3.0, 2.0, 5.0, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        sp.inhibit_local(0.34, 0.0);
        // 8 ties with 7 (already active) and loses; 9 ties with 8 (lost) and wins.
        assert_eq!(sp.winners, [1, 3, 7, 9]);
        sp.inhibit_local(0.34, 2.0);
        assert_eq!(sp.winners, [1, 3]);
    }

    #[test]
    fn inhibition_radius_from_the_connected_span() {
        assert_eq!(avg_columns_per_input(&[10, 20], &[20, 20]), 0.75);
        let params = SpatialPoolerParams {
            column_dimensions: vec![20],
            potential_radius: 20,
            potential_pct: 1.0,
            global_inhibition: false,
            ..small_params()
        };
        let mut sp = SpatialPooler::new(&[20], params).unwrap();
        // Every column connected to inputs 2 and 7 only: span 6.
        for c in 0..20 {
            let inputs: Vec<u32> = sp.pool_inputs(c).collect();
            for (k, i) in inputs.into_iter().enumerate() {
                *pool_perm_mut(&mut sp, c, k) = if i == 2 || i == 7 { 0.5 } else { 0.0 };
            }
        }
        sp.rebuild_connected_index();
        assert_eq!(sp.connected_span(0), 6.0);
        sp.update_inhibition_radius();
        // diameter 6 · (20 / 20) → radius round(2.5) = 3.
        assert_eq!(sp.inhibition_radius(), 3);
        // A synapse exactly at the connected permanence is not counted here.
        for k in 0..sp.permanences(0).len() {
            *pool_perm_mut(&mut sp, 0, k) = 0.1;
        }
        assert_eq!(sp.connected_span(0), 0.0);
    }

    #[test]
    fn local_inhibition_learns_and_is_deterministic() {
        let params = SpatialPoolerParams {
            column_dimensions: vec![64],
            potential_radius: 8,
            global_inhibition: false,
            local_area_density: 0.1,
            boost_strength: 1.0,
            ..small_params()
        };
        let mut a = SpatialPooler::new(&[128], params.clone()).unwrap();
        let mut b = SpatialPooler::new(&[128], params).unwrap();
        assert!(a.inhibition_radius() >= 1);
        let (mut out_a, mut out_b) = (Sdr::new(64), Sdr::new(64));
        for step in 1..=120 {
            let input = random_input(128, 0.1, step);
            a.compute(&input, true, &mut out_a);
            b.compute(&input, true, &mut out_b);
            assert_eq!(out_a, out_b);
            assert!(out_a.count() > 0 && out_a.count() < 32, "{}", out_a.count());
        }
        assert!(a.min_overlap_duty_cycles().iter().any(|&m| m > 0.0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn permanences_stay_in_the_unit_interval(
            seed in 1u32..1000,
            inc in 0.0f32..0.5,
            dec in 0.0f32..0.5,
            threshold in 0u32..5,
            boost in 0.0f32..5.0,
        ) {
            let params = SpatialPoolerParams {
                syn_perm_active_inc: inc,
                syn_perm_inactive_dec: dec,
                stimulus_threshold: threshold,
                boost_strength: boost,
                seed,
                ..small_params()
            };
            let mut sp = SpatialPooler::new(&[100], params).unwrap();
            let mut active = Sdr::new(50);
            for step in 0..60 {
                sp.compute(&random_input(100, 0.15, seed * 100 + step), true, &mut active);
            }
            prop_assert!(sp.state.perms.iter().all(|p| (0.0..=1.0).contains(p)));
            prop_assert_eq!(sp.num_connected_synapses(), brute_force_connected(&sp));
        }

        #[test]
        fn global_inhibition_matches_a_full_sort(
            boosted in proptest::collection::vec(prop_oneof![Just(0.0f32), Just(2.0f32), 0.0f32..4.0], 1..80),
            k in 0usize..90,
            threshold in 0.0f32..3.0,
        ) {
            let mut order: Vec<u32> = (0..boosted.len() as u32).collect();
            order.sort_by(|&a, &b| boosted[b as usize].total_cmp(&boosted[a as usize]).then(b.cmp(&a)));
            order.truncate(k);
            order.retain(|&c| boosted[c as usize] >= threshold);
            order.sort_unstable();
            let (mut keys, mut winners) = (Vec::new(), Vec::new());
            inhibit_global(&boosted, k, threshold, &mut keys, &mut winners);
            prop_assert_eq!(winners, order);
        }

        #[test]
        fn unboosted_global_inhibition_matches_the_key_selection(
            overlaps in proptest::collection::vec(prop_oneof![Just(0u32), Just(3u32), 0u32..12], 1..80),
            k in 0usize..90,
            threshold in 0.0f32..5.0,
        ) {
            let boosted: Vec<f32> = overlaps.iter().map(|&o| o as f32).collect();
            let (mut keys, mut expected) = (Vec::new(), Vec::new());
            inhibit_global(&boosted, k, threshold, &mut keys, &mut expected);
            let (mut hist, mut winners) = (vec![7u64; 3], vec![99u32]);
            inhibit_global_unboosted(&overlaps, k, threshold, &mut hist, &mut winners);
            prop_assert_eq!(winners, expected);
        }

        #[test]
        fn overlap_counts_match_the_portable_loop(
            words in proptest::collection::vec(any::<u64>(), 1..40),
            row_words in 1usize..5,
        ) {
            let rows = words.len() / row_words;
            prop_assume!(rows > 0);
            let connected = &words[..rows * row_words];
            let input: Vec<u64> = words.iter().rev().take(row_words).copied().collect();
            let mut got = vec![0u32; rows];
            overlap_counts(connected, &input, row_words, &mut got);
            let expected: Vec<u32> = connected
                .chunks(row_words)
                .map(|row| row.iter().zip(&input).map(|(&c, &i)| (c & i).count_ones()).sum())
                .collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn exactly_k_columns_win_without_a_stimulus_threshold(
            seed in 1u32..1000,
            density in 0.02f32..0.5,
            sparsity in 0.0f32..0.3,
        ) {
            let params = SpatialPoolerParams { local_area_density: density, seed, ..small_params() };
            let k = (density * 50.0) as usize;
            prop_assume!(k > 0);
            let mut sp = SpatialPooler::new(&[100], params).unwrap();
            let mut active = Sdr::new(50);
            for step in 0..20 {
                sp.compute(&random_input(100, sparsity, seed + step), step % 2 == 0, &mut active);
                prop_assert_eq!(active.count(), k);
            }
        }

        #[test]
        fn same_seed_gives_the_same_outputs(seed in 1u32..1000, boost in 0.0f32..3.0) {
            let params = SpatialPoolerParams { seed, boost_strength: boost, ..small_params() };
            let mut a = SpatialPooler::new(&[100], params.clone()).unwrap();
            let mut b = SpatialPooler::new(&[100], params).unwrap();
            let (mut out_a, mut out_b) = (Sdr::new(50), Sdr::new(50));
            for step in 0..40 {
                let input = random_input(100, 0.1, seed ^ step);
                a.compute(&input, true, &mut out_a);
                b.compute(&input, true, &mut out_b);
                prop_assert_eq!(&out_a, &out_b);
            }
            prop_assert_eq!(&a.state.perms, &b.state.perms);
        }
    }

    #[test]
    fn bincode_round_trip_keeps_the_whole_state() {
        let mut sp = SpatialPooler::new(&[100], small_params()).unwrap();
        let mut active = Sdr::new(50);
        for step in 1..=30 {
            sp.compute(&random_input(100, 0.1, step), true, &mut active);
        }
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&sp, config).unwrap();
        let (mut restored, read): (SpatialPooler, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(read, bytes.len());
        let mut other = Sdr::new(50);
        for step in 31..=60 {
            let input = random_input(100, 0.1, step);
            sp.compute(&input, true, &mut active);
            restored.compute(&input, true, &mut other);
            assert_eq!(active, other);
        }
    }

    /// Size report for the service's target preset (run with `--ignored
    /// --nocapture`).
    #[test]
    #[ignore]
    fn preset_memory_report() {
        let params = SpatialPoolerParams {
            column_dimensions: vec![2048],
            potential_radius: 454,
            potential_pct: 0.8,
            local_area_density: 40.0 / 2048.0,
            ..SpatialPoolerParams::default()
        };
        let mut sp = SpatialPooler::new(&[454], params).unwrap();
        let mut active = Sdr::new(2048);
        let start = std::time::Instant::now();
        for step in 1..=200 {
            sp.compute(&random_input(454, 42.0 / 454.0, step), true, &mut active);
            assert_eq!(active.count(), 40);
        }
        let per_step = start.elapsed() / 200;
        println!(
            "synapses {} connected {} memory {} bytes, {:?}/step (this profile)",
            pool_perms(&sp).len(),
            sp.num_connected_synapses(),
            sp.memory_bytes(),
            per_step
        );
        let json_len = serde_json::to_vec(&sp).unwrap().len();
        let bin_len = bincode::serde::encode_to_vec(&sp, bincode::config::standard())
            .unwrap()
            .len();
        println!("json {json_len} bytes, bincode {bin_len} bytes");
    }
}
