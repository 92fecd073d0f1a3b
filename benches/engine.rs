//! Criterion benches of the engine on real data: one Spatial Pooler step,
//! one Temporal Memory step and one full `Model::step`, with the `nab`
//! preset over the hot-gym series (`../shared/data/hotgym.csv`), and the
//! encoding of that model's checkpoint after one pass; and the `default`
//! preset's full step over 100 models in turn, one step each (the many
//! streams of the service, each step with its model out of the caches).
//!
//! Each bench first warms a model up with one pass over the file (learning
//! on, as in service), keeps that state as a snapshot, then measures steps
//! of the second pass. When the measured steps reach the end of the file,
//! a fresh copy of the snapshot (made outside the timed region) starts the
//! second pass again. So every figure is the mean step of the second pass,
//! however many iterations criterion asks for; cycling one model through
//! the file again and again would instead measure a model trained for ever
//! more passes, which grows and slows down (see README's performance table).
//!
//! Run: `cargo bench --bench engine`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use htm_stream::htm::date_encoder::DateEncoder;
use htm_stream::htm::rdse::Rdse;
use htm_stream::htm::sdr::Sdr;
use htm_stream::htm::spatial_pooler::SpatialPooler;
use htm_stream::htm::temporal_memory::TemporalMemory;
use htm_stream::model::{Model, ModelParams};
use htm_stream::replay::run::probationary_period;
use htm_stream::replay::series::{read_series, Sample, SeriesFormat};
use htm_stream::store::codec;

/// The hot-gym file: `$HTM_HOTGYM_CSV`, else `shared/data/hotgym.csv` next
/// to the repository (or next to the worktree's parent, for git worktrees).
fn hotgym() -> Vec<Sample> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = std::env::var_os("HTM_HOTGYM_CSV")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            ["../shared/data/hotgym.csv", "../../shared/data/hotgym.csv"]
                .iter()
                .map(|p| root.join(p))
                .find(|p| p.exists())
        })
        .expect("hot-gym data: set HTM_HOTGYM_CSV or put shared/ beside the repository");
    read_series(&path, SeriesFormat::Auto).expect("readable hot-gym data")
}

fn nab_params(samples: &[Sample]) -> ModelParams {
    let mut params = ModelParams::nab();
    let (min, max) = samples
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
            (lo.min(s.value), hi.max(s.value))
        });
    params.set_value_range(min, max);
    params.set_probationary_period(probationary_period(samples.len()));
    params
}

/// The encoder outputs of every sample, as the SP sees them.
fn encoded_inputs(samples: &[Sample], params: &ModelParams) -> Vec<Sdr> {
    let v = &params.value_encoder;
    let rdse = Rdse::new(v.rdse_params(v.resolution.expect("range set"))).unwrap();
    let date = DateEncoder::new(params.date_encoder.clone()).unwrap();
    let (mut a, mut b) = (Sdr::new(rdse.size()), Sdr::new(date.size()));
    samples
        .iter()
        .map(|s| {
            rdse.encode(s.value, &mut a);
            date.encode(s.timestamp, &mut b);
            Sdr::concat(&[&a, &b])
        })
        .collect()
}

/// Time `iters` calls of `step(state, i)` over the second pass: `state`
/// starts as a copy of `snapshot` and is replaced by a fresh copy (untimed)
/// whenever `cursor` wraps past `len` steps.
fn second_pass<T: Clone>(
    iters: u64,
    snapshot: &T,
    state: &mut T,
    cursor: &mut usize,
    len: usize,
    mut step: impl FnMut(&mut T, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        if *cursor == len {
            *state = snapshot.clone();
            *cursor = 0;
        }
        let n = left.min(len - *cursor);
        let start = Instant::now();
        for i in *cursor..*cursor + n {
            step(state, i);
        }
        total += start.elapsed();
        *cursor += n;
        left -= n;
    }
    total
}

fn bench_engine(c: &mut Criterion) {
    let samples = hotgym();
    let params = nab_params(&samples);
    let inputs = encoded_inputs(&samples, &params);
    let input_width = inputs[0].size();

    // Spatial Pooler, learning on.
    let mut sp = SpatialPooler::new(&[input_width], params.sp.clone()).unwrap();
    let mut columns = Sdr::new(sp.num_columns());
    let mut all_columns = Vec::with_capacity(inputs.len());
    for input in &inputs {
        sp.compute(input, true, &mut columns);
        all_columns.push(columns.clone());
    }
    let (sp_snapshot, mut i) = (sp.clone(), 0);
    c.bench_function("sp_step_nab_hotgym", |bench| {
        bench.iter_custom(|iters| {
            second_pass(
                iters,
                &sp_snapshot,
                &mut sp,
                &mut i,
                inputs.len(),
                |sp, i| {
                    sp.compute(&inputs[i], true, &mut columns);
                },
            )
        })
    });

    // Temporal Memory, learning on, on the SP's outputs.
    let mut tm = TemporalMemory::new(sp.num_columns(), params.tm.clone()).unwrap();
    for cols in &all_columns {
        tm.compute(cols, true);
    }
    let (tm_snapshot, mut j) = (tm.clone(), 0);
    c.bench_function("tm_step_nab_hotgym", |bench| {
        bench.iter_custom(|iters| {
            second_pass(
                iters,
                &tm_snapshot,
                &mut tm,
                &mut j,
                all_columns.len(),
                |tm, j| {
                    tm.compute(&all_columns[j], true);
                },
            )
        })
    });

    // The whole model: encode + SP + TM + likelihood + predictor.
    let mut model = Model::new(params).unwrap();
    for s in &samples {
        model.step(s.timestamp, s.value, true);
    }
    // The checkpoint of the model after one pass, encoded into a 64 KiB
    // buffer that is thrown away (the codec's work, not the disk's).
    c.bench_function("checkpoint_encode_nab_hotgym", |bench| {
        bench.iter(|| {
            let mut sink = std::io::BufWriter::with_capacity(1 << 16, std::io::sink());
            codec::encode_to_writer(&model, &mut sink).unwrap();
        })
    });

    let (model_snapshot, mut k) = (model.clone(), 0);
    c.bench_function("model_step_nab_hotgym", |bench| {
        bench.iter_custom(|iters| {
            second_pass(
                iters,
                &model_snapshot,
                &mut model,
                &mut k,
                samples.len(),
                |m, k| {
                    let s = &samples[k];
                    black_box(m.step(s.timestamp, s.value, true));
                },
            )
        })
    });
}

/// Models of the many-streams bench: far more memory (about 10 MB each after
/// the warm-up) than the CPU's last-level cache.
const IN_TURN_MODELS: usize = 100;

/// Samples each of those models learns before it is measured: past the
/// `default` preset's 300 calibration samples, as in the load bench.
const IN_TURN_WARMUP: usize = 450;

/// The service's usual case: many streams, each sample to a different
/// one, so every step finds its model out of the CPU caches. 100 `default`
/// models (seeds 1..=100) learn the first 450 hot-gym rows; then one step
/// per model in turn, each model on its next row. When a model reaches the
/// end of the file, every model is reset to its warmed state (untimed).
fn bench_models_in_turn(c: &mut Criterion) {
    let samples = hotgym();
    let warmed: Vec<Model> = (1..=IN_TURN_MODELS as u64)
        .map(|seed| {
            let params = ModelParams::default_preset()
                .with_assignments(&[
                    format!("sp.seed={seed}"),
                    format!("tm.seed={seed}"),
                    format!("value_encoder.seed={seed}"),
                ])
                .unwrap();
            let mut model = Model::new(params).unwrap();
            for s in &samples[..IN_TURN_WARMUP] {
                model.step(s.timestamp, s.value, true);
            }
            model
        })
        .collect();
    let mut models = warmed.clone();
    let (mut next_model, mut row) = (0, IN_TURN_WARMUP);
    c.bench_function("model_step_default_100_models_in_turn", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if row == samples.len() {
                    models.clone_from(&warmed);
                    (next_model, row) = (0, IN_TURN_WARMUP);
                }
                // Up to the end of the current row's round over the models.
                let n = left.min((IN_TURN_MODELS - next_model) as u64);
                let s = &samples[row];
                let start = Instant::now();
                for m in &mut models[next_model..next_model + n as usize] {
                    black_box(m.step(s.timestamp, s.value, true));
                }
                total += start.elapsed();
                next_model += n as usize;
                if next_model == IN_TURN_MODELS {
                    (next_model, row) = (0, row + 1);
                }
                left -= n;
            }
            total
        })
    });
}

criterion_group!(benches, bench_engine, bench_models_in_turn);
criterion_main!(benches);
