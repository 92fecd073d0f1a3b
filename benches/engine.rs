//! Criterion benches of the engine on real data: one Spatial Pooler step,
//! one Temporal Memory step and one full `Model::step`, with the `nab`
//! preset over the hot-gym series (`../shared/data/hotgym.csv`).
//!
//! Each bench first warms a model up with one pass over the file (learning
//! on, as in service), then measures steps over the file again, cycling.
//!
//! Run: `cargo bench --bench engine`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};

use htm_stream::htm::date_encoder::DateEncoder;
use htm_stream::htm::rdse::Rdse;
use htm_stream::htm::sdr::Sdr;
use htm_stream::htm::spatial_pooler::SpatialPooler;
use htm_stream::htm::temporal_memory::TemporalMemory;
use htm_stream::model::{Model, ModelParams};
use htm_stream::replay::run::probationary_period;
use htm_stream::replay::series::{read_series, Sample, SeriesFormat};

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
    let mut i = 0;
    c.bench_function("sp_step_nab_hotgym", |bench| {
        bench.iter(|| {
            sp.compute(&inputs[i % inputs.len()], true, &mut columns);
            i += 1;
        })
    });

    // Temporal Memory, learning on, on the SP's outputs.
    let mut tm = TemporalMemory::new(sp.num_columns(), params.tm.clone()).unwrap();
    for cols in &all_columns {
        tm.compute(cols, true);
    }
    let mut j = 0;
    c.bench_function("tm_step_nab_hotgym", |bench| {
        bench.iter(|| {
            tm.compute(&all_columns[j % all_columns.len()], true);
            j += 1;
        })
    });

    // The whole model: encode + SP + TM + likelihood + predictor.
    let mut model = Model::new(params).unwrap();
    for s in &samples {
        model.step(s.timestamp, s.value, true);
    }
    let mut k = 0;
    c.bench_function("model_step_nab_hotgym", |bench| {
        bench.iter(|| {
            let s = &samples[k % samples.len()];
            k += 1;
            model.step(s.timestamp, s.value, true)
        })
    });
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
