//! ScalarEncoder: a number in a known range as a run of `active_bits`
//! consecutive bits whose position is proportional to the value.
//!
//! Values closer than the encoder's `radius` share bits (the closer, the
//! more), values farther apart share none — the property every HTM encoder
//! must have so that the Spatial Pooler sees similar inputs as similar. A
//! periodic encoder wraps the run around the end of the output, so the
//! maximum and the minimum of, e.g., the time of day meet. The
//! [`super::date_encoder::DateEncoder`] is built from these.
//!
//! Semantics follow htm.core (htm-reference.md §1.2): the parameters give
//! either the output `size`, the `radius`, the `resolution` or `category`,
//! and either `active_bits` or `sparsity`; the rest is derived once, at
//! construction, in `f64`. The bucket of a value is
//! `round((x - minimum) / resolution)` (half away from zero); a
//! non-periodic encoder pushes the top buckets onto the last valid position
//! because its maximum is inclusive.
//!
//! This module also holds [`EncoderError`], shared by all encoders.

use serde::{Deserialize, Serialize};

use super::sdr::Sdr;

/// Why an encoder could not be built or could not encode a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncoderError {
    /// A parameter set is inconsistent or out of range (checked once, when
    /// the encoder is built).
    #[error("invalid {encoder} parameters: {reason}")]
    InvalidParams {
        /// Which encoder rejected its parameters (`"RDSE"`, ...).
        encoder: &'static str,
        /// What is wrong, naming the parameter(s).
        reason: String,
    },
    /// The input lies outside `[minimum, maximum]` and the encoder does not
    /// clip.
    #[error("input {value} is outside the encoder range [{minimum}, {maximum}]")]
    OutOfRange {
        /// The rejected input.
        value: f64,
        /// Smallest accepted input.
        minimum: f64,
        /// Largest accepted input.
        maximum: f64,
    },
    /// A category encoder got an input that is not a whole number.
    #[error("category encoder input {value} is not a non-negative whole number")]
    NotACategory {
        /// The rejected input.
        value: f64,
    },
}

/// Parameters of a [`ScalarEncoder`] (htm.core's `ScalarEncoderParameters`).
///
/// Give exactly one of `size`, `radius`, `resolution` (all `> 0`) or
/// `category`, and exactly one of `active_bits` or `sparsity` (`sparsity`
/// needs `size`). Fields left at zero / `false` are "not given".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalarEncoderParams {
    /// Smallest input (inclusive).
    pub minimum: f64,
    /// Largest input (inclusive; for a periodic encoder it is the same point
    /// as `minimum`).
    pub maximum: f64,
    /// Clamp out-of-range inputs to `[minimum, maximum]` instead of failing.
    /// Not allowed with `periodic` or `category`.
    pub clip_input: bool,
    /// The range wraps around: `maximum` encodes like `minimum`.
    pub periodic: bool,
    /// Inputs are whole-number categories; different categories share no
    /// bits (radius 1). `minimum` and `maximum` must be whole numbers ≥ 0.
    pub category: bool,
    /// Number of active bits in every output.
    pub active_bits: u32,
    /// Fraction of active bits; `active_bits = round(size * sparsity)`.
    pub sparsity: f64,
    /// Output width in bits.
    pub size: u32,
    /// Inputs this far apart or farther share no active bits.
    pub radius: f64,
    /// Inputs this far apart or farther get different encodings.
    pub resolution: f64,
}

/// Largest output size we accept; keeps `start + active_bits` far from
/// `u32` overflow.
const MAX_SIZE: u32 = 1 << 30;

/// Encodes a scalar in a known range; see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalarEncoder {
    minimum: f64,
    maximum: f64,
    clip_input: bool,
    periodic: bool,
    category: bool,
    active_bits: u32,
    size: u32,
    /// Width of one bucket: the input step that moves the run by one bit.
    resolution: f64,
    /// `active_bits * resolution`, recomputed from the final resolution.
    radius: f64,
}

/// The smallest `f64` greater than `x` (for finite `x`); `f64::next_up` is
/// newer than our minimum Rust version.
fn next_up(x: f64) -> f64 {
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let bits = x.to_bits();
    if x > 0.0 {
        f64::from_bits(bits + 1)
    } else {
        f64::from_bits(bits - 1)
    }
}

fn invalid(reason: impl Into<String>) -> EncoderError {
    EncoderError::InvalidParams {
        encoder: "ScalarEncoder",
        reason: reason.into(),
    }
}

/// Rejects a NaN, infinite or negative optional real parameter.
fn check_optional(name: &str, value: f64) -> Result<(), EncoderError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "`{name}` must be a finite number >= 0 (0 = not given), got {value}"
        )))
    }
}

impl ScalarEncoder {
    /// Validate the parameters and derive the missing ones.
    pub fn new(params: ScalarEncoderParams) -> Result<ScalarEncoder, EncoderError> {
        let p = params;
        if !(p.minimum.is_finite() && p.maximum.is_finite()) {
            return Err(invalid("`minimum` and `maximum` must be finite"));
        }
        if p.minimum > p.maximum {
            return Err(invalid(format!(
                "`minimum` ({}) must not exceed `maximum` ({})",
                p.minimum, p.maximum
            )));
        }
        check_optional("sparsity", p.sparsity)?;
        check_optional("radius", p.radius)?;
        check_optional("resolution", p.resolution)?;

        let width_args = u32::from(p.active_bits > 0) + u32::from(p.sparsity > 0.0);
        if width_args != 1 {
            return Err(invalid(
                "give exactly one of `active_bits` or `sparsity`".to_string(),
            ));
        }
        let size_args = u32::from(p.size > 0)
            + u32::from(p.radius > 0.0)
            + u32::from(p.resolution > 0.0)
            + u32::from(p.category);
        if size_args != 1 {
            return Err(invalid(
                "give exactly one of `size`, `radius`, `resolution` or `category`",
            ));
        }
        if p.periodic && p.clip_input {
            return Err(invalid(
                "`clip_input` cannot be used with `periodic` (wrap the input instead)",
            ));
        }
        if p.category {
            if p.clip_input || p.periodic {
                return Err(invalid(
                    "`category` cannot be combined with `clip_input` or `periodic`",
                ));
            }
            let whole = |x: f64| x >= 0.0 && x.fract() == 0.0;
            if !(whole(p.minimum) && whole(p.maximum)) {
                return Err(invalid(
                    "a category encoder needs whole-number `minimum` and `maximum` >= 0",
                ));
            }
        }
        if p.periodic && p.minimum == p.maximum {
            return Err(invalid("a periodic encoder needs `minimum` < `maximum`"));
        }

        let mut active_bits = p.active_bits;
        if p.sparsity > 0.0 {
            if p.sparsity > 1.0 {
                return Err(invalid(format!(
                    "`sparsity` must be in (0, 1], got {}",
                    p.sparsity
                )));
            }
            if p.size == 0 {
                return Err(invalid("`sparsity` requires `size`"));
            }
            active_bits = (f64::from(p.size) * p.sparsity).round() as u32;
            if active_bits == 0 {
                return Err(invalid(format!(
                    "`sparsity` {} of `size` {} rounds to zero active bits",
                    p.sparsity, p.size
                )));
            }
        }

        // The maximum is inclusive for a non-periodic encoder, so its extent
        // reaches just past it; a periodic one's maximum is its minimum.
        let extent = if p.periodic {
            p.maximum - p.minimum
        } else {
            next_up(p.maximum) - p.minimum
        };
        if !extent.is_finite() {
            return Err(invalid("`maximum - minimum` overflows"));
        }

        let (size, resolution) = if p.size > 0 {
            let size = p.size;
            if active_bits >= size {
                return Err(invalid(format!(
                    "`active_bits` ({active_bits}) must be smaller than `size` ({size})"
                )));
            }
            // Periodic: `size` buckets around the circle. Otherwise the run
            // can start at `size - active_bits + 1` places, spread evenly
            // from minimum to maximum inclusive.
            let buckets = if p.periodic { size } else { size - active_bits };
            (size, extent / f64::from(buckets))
        } else {
            let radius = if p.category { 1.0 } else { p.radius };
            let resolution = if radius > 0.0 {
                radius / f64::from(active_bits)
            } else {
                p.resolution
            };
            let bands = (extent / resolution).ceil();
            let size = if p.periodic {
                bands
            } else {
                bands + f64::from(active_bits - 1)
            };
            if !(size >= 1.0 && size <= f64::from(MAX_SIZE)) {
                return Err(invalid(format!(
                    "the derived size ({size}) must be in 1..={MAX_SIZE}; \
                     check the range against `radius` / `resolution`"
                )));
            }
            (size as u32, resolution)
        };
        if size > MAX_SIZE {
            return Err(invalid(format!("`size` must be at most {MAX_SIZE}")));
        }
        if active_bits >= size {
            return Err(invalid(format!(
                "`active_bits` ({active_bits}) must be smaller than the size ({size})"
            )));
        }
        if !(resolution.is_finite() && resolution > 0.0) {
            return Err(invalid(format!(
                "the derived resolution ({resolution}) must be a positive finite number"
            )));
        }

        Ok(ScalarEncoder {
            minimum: p.minimum,
            maximum: p.maximum,
            clip_input: p.clip_input,
            periodic: p.periodic,
            category: p.category,
            active_bits,
            size,
            resolution,
            radius: f64::from(active_bits) * resolution,
        })
    }

    /// Output width in bits.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Input step that moves the encoding by one bit.
    pub fn resolution(&self) -> f64 {
        self.resolution
    }

    /// Inputs at least this far apart share no active bits
    /// (`active_bits * resolution`).
    pub fn radius(&self) -> f64 {
        self.radius
    }

    /// Number of active bits in every (non-NaN) encoding.
    pub fn active_bits(&self) -> u32 {
        self.active_bits
    }

    /// Encode `value` into `out` (resized to [`ScalarEncoder::size`] if its
    /// size differs; no allocation once `out` has the size and capacity).
    ///
    /// NaN gives all zeros. Without `clip_input`, an input outside
    /// `[minimum, maximum]` is an error, as is a non-integer input to a
    /// category encoder; `out` is left unchanged on error.
    pub fn encode(&self, value: f64, out: &mut Sdr) -> Result<(), EncoderError> {
        let start = self.bucket(value)?;
        if out.size() != self.size {
            *out = Sdr::new(self.size);
        }
        match start {
            None => out.clear(),
            Some(start) => out.set_indices(self.bits(start)),
        }
        Ok(())
    }

    /// The first bit of the run for `value`, or `None` for NaN.
    pub(crate) fn bucket(&self, value: f64) -> Result<Option<u32>, EncoderError> {
        if value.is_nan() {
            return Ok(None);
        }
        let x = if self.clip_input {
            value.clamp(self.minimum, self.maximum)
        } else {
            if self.category && value.fract() != 0.0 {
                return Err(EncoderError::NotACategory { value });
            }
            if !(value >= self.minimum && value <= self.maximum) {
                return Err(EncoderError::OutOfRange {
                    value,
                    minimum: self.minimum,
                    maximum: self.maximum,
                });
            }
            value
        };
        // `round` is half away from zero, as C's `round`; the quotient is
        // in [0, size] so the conversion is exact.
        let mut start = ((x - self.minimum) / self.resolution).round() as u32;
        if !self.periodic {
            // The inclusive maximum (and whatever rounds up to it) would run
            // off the end: keep it on the last valid position.
            start = start.min(self.size - self.active_bits);
        }
        Ok(Some(start))
    }

    /// The active bits of the run starting at `start`, wrapped around the
    /// end for a periodic encoder. Not necessarily ascending.
    pub(crate) fn bits(&self, start: u32) -> impl Iterator<Item = u32> + '_ {
        let size = self.size;
        (start..start + self.active_bits).map(move |b| if b >= size { b - size } else { b })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoder(p: ScalarEncoderParams) -> ScalarEncoder {
        ScalarEncoder::new(p).expect("valid parameters")
    }

    fn bits(enc: &ScalarEncoder, x: f64) -> Vec<u32> {
        let mut out = Sdr::new(enc.size());
        enc.encode(x, &mut out).expect("encodable");
        out.indices().to_vec()
    }

    fn range10_20(clip: bool) -> ScalarEncoder {
        encoder(ScalarEncoderParams {
            minimum: 10.0,
            maximum: 20.0,
            clip_input: clip,
            size: 10,
            active_bits: 2,
            ..Default::default()
        })
    }

    #[test]
    fn clipping_maps_outside_values_to_the_ends() {
        let enc = range10_20(true);
        assert_eq!(bits(&enc, 0.0), bits(&enc, 10.0));
        assert_eq!(bits(&enc, -1e9), vec![0, 1]);
        assert_eq!(bits(&enc, 100.0), bits(&enc, 20.0));
        assert_eq!(bits(&enc, 100.0), vec![8, 9]);
    }

    #[test]
    fn valid_range_is_inclusive_and_outside_is_an_error() {
        let enc = range10_20(false);
        let mut out = Sdr::new(enc.size());
        for x in [10.0, 19.999, 20.0, 15.0] {
            assert!(enc.encode(x, &mut out).is_ok(), "{x}");
            assert_eq!(out.count(), 2);
        }
        for x in [9.999, 20.0001, f64::INFINITY, f64::NEG_INFINITY] {
            let err = enc.encode(x, &mut out).unwrap_err();
            assert_eq!(
                err,
                EncoderError::OutOfRange {
                    value: x,
                    minimum: 10.0,
                    maximum: 20.0
                }
            );
        }
        let msg = enc.encode(9.5, &mut out).unwrap_err().to_string();
        assert!(msg.contains("9.5") && msg.contains("[10, 20]"), "{msg}");
    }

    #[test]
    fn error_leaves_output_unchanged() {
        let enc = range10_20(false);
        let mut out = Sdr::new(enc.size());
        enc.encode(15.0, &mut out).unwrap();
        let before = out.clone();
        assert!(enc.encode(25.0, &mut out).is_err());
        assert_eq!(out, before);
    }

    #[test]
    fn nan_encodes_as_all_zeros() {
        let enc = range10_20(false);
        let mut out = Sdr::new(enc.size());
        enc.encode(12.0, &mut out).unwrap();
        assert_eq!(out.count(), 2);
        enc.encode(f64::NAN, &mut out).unwrap();
        assert_eq!(out.count(), 0);
        assert_eq!(out.size(), 10);
    }

    #[test]
    fn output_of_wrong_size_is_resized() {
        let enc = range10_20(false);
        let mut out = Sdr::default();
        enc.encode(20.0, &mut out).unwrap();
        assert_eq!(out.size(), 10);
        assert_eq!(out.indices(), &[8, 9]);
    }

    #[test]
    fn category_inputs() {
        let enc = encoder(ScalarEncoderParams {
            minimum: 0.0,
            maximum: 65.0,
            category: true,
            active_bits: 3,
            ..Default::default()
        });
        // Radius 1: one bucket per category, 66 categories of 3 bits.
        assert_eq!(enc.radius(), 1.0);
        assert_eq!(enc.size(), 66 * 3);
        let mut out = Sdr::new(enc.size());
        for x in [0.1, 64.5, -0.5] {
            assert_eq!(
                enc.encode(x, &mut out),
                Err(EncoderError::NotACategory { value: x })
            );
        }
        for x in [-1.0, 66.0] {
            assert!(matches!(
                enc.encode(x, &mut out),
                Err(EncoderError::OutOfRange { .. })
            ));
        }
        assert_eq!(bits(&enc, 0.0), vec![0, 1, 2]);
        assert_eq!(bits(&enc, 2.0), vec![6, 7, 8]);
        assert_eq!(bits(&enc, 65.0), vec![195, 196, 197]);
        // Different categories never share bits.
        for a in 0..66 {
            for b in (a + 1)..66 {
                let (ea, eb) = (bits(&enc, f64::from(a)), bits(&enc, f64::from(b)));
                assert!(ea.iter().all(|i| !eb.contains(i)), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn non_integer_bucket_width() {
        // 7 bits, 3 active: 5 positions over [10, 20] → bucket width ≈ 2.5.
        let enc = encoder(ScalarEncoderParams {
            minimum: 10.0,
            maximum: 20.0,
            size: 7,
            active_bits: 3,
            ..Default::default()
        });
        assert!((enc.resolution() - 2.5).abs() < 1e-12);
        assert_eq!(bits(&enc, 10.0), vec![0, 1, 2]);
        assert_eq!(bits(&enc, 20.0), vec![4, 5, 6]);
        assert_eq!(bits(&enc, 15.0), vec![2, 3, 4]);
    }

    #[test]
    fn rounds_to_the_nearest_multiple_of_the_resolution() {
        let enc = encoder(ScalarEncoderParams {
            minimum: 10.0,
            maximum: 35.0,
            resolution: 1.0,
            active_bits: 3,
            ..Default::default()
        });
        // 26 positions (10..=35) + 2 trailing bits.
        assert_eq!(enc.size(), 28);
        assert_eq!(enc.radius(), 3.0);
        let cases: &[(f64, [u32; 3])] = &[
            (10.0, [0, 1, 2]),
            (10.49, [0, 1, 2]),
            (10.5, [1, 2, 3]),
            (11.49, [1, 2, 3]),
            (11.5, [2, 3, 4]),
            (34.49, [24, 25, 26]),
            (34.5, [25, 26, 27]),
            (35.0, [25, 26, 27]),
        ];
        for (x, expected) in cases {
            assert_eq!(bits(&enc, *x), expected.to_vec(), "{x}");
        }
    }

    #[test]
    fn periodic_rounding_and_wrap() {
        let enc = encoder(ScalarEncoderParams {
            minimum: 10.0,
            maximum: 20.0,
            resolution: 1.0,
            active_bits: 3,
            periodic: true,
            ..Default::default()
        });
        assert_eq!(enc.size(), 10);
        let cases: &[(f64, [u32; 3])] = &[
            (10.0, [0, 1, 2]),
            (10.49, [0, 1, 2]),
            (10.5, [1, 2, 3]),
            (17.0, [7, 8, 9]),
            (18.0, [0, 8, 9]),
            (19.49, [0, 1, 9]),
            (19.5, [0, 1, 2]),
            (20.0, [0, 1, 2]),
        ];
        for (x, expected) in cases {
            assert_eq!(bits(&enc, *x), expected.to_vec(), "{x}");
        }
    }

    #[test]
    fn size_given_periodic_resolution() {
        let enc = encoder(ScalarEncoderParams {
            minimum: 0.0,
            maximum: 24.0,
            size: 48,
            sparsity: 0.125,
            periodic: true,
            ..Default::default()
        });
        assert_eq!(enc.active_bits(), 6);
        assert_eq!(enc.resolution(), 0.5);
        assert_eq!(enc.radius(), 3.0);
        assert_eq!(bits(&enc, 23.5), vec![0, 1, 2, 3, 4, 47]);
    }

    #[test]
    fn radius_derives_size() {
        // timeOfDay (21, 9.49) of htm-reference.md §1.3.
        let enc = encoder(ScalarEncoderParams {
            minimum: 0.0,
            maximum: 24.0,
            periodic: true,
            active_bits: 21,
            radius: 9.49,
            ..Default::default()
        });
        assert_eq!(enc.size(), 54);
        assert!((enc.resolution() - 9.49 / 21.0).abs() < 1e-15);
        assert!((enc.radius() - 9.49).abs() < 1e-12);
    }

    #[test]
    fn parameter_validation() {
        let ok = ScalarEncoderParams {
            minimum: 0.0,
            maximum: 10.0,
            size: 20,
            active_bits: 3,
            ..Default::default()
        };
        assert!(ScalarEncoder::new(ok.clone()).is_ok());
        let bad = [
            ScalarEncoderParams::default(),
            ScalarEncoderParams {
                sparsity: 0.1,
                ..ok.clone()
            },
            ScalarEncoderParams {
                active_bits: 0,
                ..ok.clone()
            },
            ScalarEncoderParams {
                radius: 2.0,
                ..ok.clone()
            },
            ScalarEncoderParams {
                size: 0,
                ..ok.clone()
            },
            ScalarEncoderParams {
                minimum: 11.0,
                ..ok.clone()
            },
            ScalarEncoderParams {
                maximum: f64::NAN,
                ..ok.clone()
            },
            ScalarEncoderParams {
                active_bits: 20,
                ..ok.clone()
            },
            ScalarEncoderParams {
                periodic: true,
                clip_input: true,
                ..ok.clone()
            },
            ScalarEncoderParams {
                size: 0,
                category: true,
                maximum: 10.5,
                ..ok.clone()
            },
            ScalarEncoderParams {
                size: 0,
                category: true,
                periodic: true,
                ..ok.clone()
            },
            ScalarEncoderParams {
                size: 0,
                radius: -1.0,
                ..ok.clone()
            },
            ScalarEncoderParams {
                size: 0,
                resolution: 1e-12,
                ..ok.clone()
            },
            ScalarEncoderParams {
                active_bits: 0,
                sparsity: 1.5,
                ..ok.clone()
            },
            ScalarEncoderParams {
                active_bits: 0,
                sparsity: 0.01,
                ..ok.clone()
            },
            ScalarEncoderParams {
                periodic: true,
                maximum: 0.0,
                ..ok.clone()
            },
        ];
        for p in bad {
            let err = ScalarEncoder::new(p.clone()).unwrap_err();
            assert!(
                matches!(
                    err,
                    EncoderError::InvalidParams {
                        encoder: "ScalarEncoder",
                        ..
                    }
                ),
                "{p:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn params_deserialize_with_defaults_and_reject_unknown_fields() {
        let p: ScalarEncoderParams = serde_json::from_str(
            r#"{"maximum": 24, "periodic": true, "size": 48, "active_bits": 4}"#,
        )
        .unwrap();
        assert_eq!(p.minimum, 0.0);
        assert_eq!(p.size, 48);
        assert!(p.periodic && !p.category);
        assert!(serde_json::from_str::<ScalarEncoderParams>(r#"{"sise": 3}"#).is_err());
    }

    proptest! {
        /// Every in-range value activates exactly `active_bits` bits forming
        /// one run, and the run moves forward (never back) as the value
        /// grows; values one radius apart share nothing.
        #[test]
        fn non_periodic_runs(
            min in -1e3f64..1e3,
            span in 0.5f64..1e3,
            active in 1u32..30,
            extra in 1u32..300,
            a in 0.0f64..=1.0,
            b in 0.0f64..=1.0,
        ) {
            let enc = encoder(ScalarEncoderParams {
                minimum: min,
                maximum: min + span,
                size: active + extra,
                active_bits: active,
                ..Default::default()
            });
            let (lo, hi) = (a.min(b), a.max(b));
            let (x, y) = (min + lo * span, min + hi * span);
            let (bx, by) = (bits(&enc, x), bits(&enc, y));
            prop_assert_eq!(bx.len(), active as usize);
            prop_assert_eq!(by.len(), active as usize);
            prop_assert!(bx.windows(2).all(|w| w[1] == w[0] + 1));
            prop_assert!(bx[0] <= by[0]);
            prop_assert!(*by.last().unwrap() < enc.size());
            let overlap = bx.iter().filter(|i| by.contains(i)).count() as u32;
            prop_assert_eq!(overlap, active.saturating_sub(by[0] - bx[0]));
            if y - x >= enc.radius() + enc.resolution() {
                prop_assert_eq!(overlap, 0);
            }
        }

        /// Periodic encodings always have `active_bits` bits, and the
        /// minimum and maximum encode identically.
        #[test]
        fn periodic_wraps(
            span in 0.5f64..1e3,
            active in 1u32..30,
            extra in 1u32..300,
            a in 0.0f64..=1.0,
        ) {
            let enc = encoder(ScalarEncoderParams {
                minimum: 0.0,
                maximum: span,
                size: active + extra,
                active_bits: active,
                periodic: true,
                ..Default::default()
            });
            prop_assert_eq!(bits(&enc, a * span).len(), active as usize);
            prop_assert_eq!(bits(&enc, 0.0), bits(&enc, span));
        }
    }
}
