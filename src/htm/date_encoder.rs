//! DateEncoder: a timestamp as the concatenation of periodic calendar
//! encodings — season (day of year), day of week, weekend, time of day.
//!
//! Many metrics follow daily and weekly rhythms; giving the Spatial Pooler
//! the position in those cycles next to the value lets the Temporal Memory
//! learn "this value is normal at this hour". Each enabled part is a
//! [`ScalarEncoder`]; their outputs are concatenated in the fixed order
//! season, day of week, weekend, time of day (a part with width 0 is left
//! out). Spec: htm-reference.md §1.3; holiday and custom-day parts are not
//! implemented.
//!
//! Input values, following htm.core's *python* `DateEncoder` (the one the
//! hotgym example and the NAB htm.core detector use), from the wall-clock
//! fields of a naive timestamp:
//!
//! | part | encoder | value |
//! |---|---|---|
//! | season | `[0, 366]` periodic, radius in days | day of year, 0-based |
//! | day of week | `[0, 7]` periodic, radius in days | Monday = 0, plus `time_of_day / 24`, minus 0.5, wrapped to `[0, 7)` |
//! | weekend | `{0, 1}` category | 1 on Saturday, Sunday, and Friday with `time_of_day > 18` |
//! | time of day | `[0, 24]` periodic, radius in hours | `hour + minute / 60` (seconds ignored) |
//!
//! The day-of-week value is python's continuous form, not C++'s integer
//! weekday: it keeps every part on the same (python) rules, and it moves
//! smoothly through the week instead of jumping at midnight. The 0.5 shift
//! puts the centre of each day's bucket at noon. Neither reference
//! parameter set enables this part, so no reference output depends on the
//! choice.

use chrono::{Datelike, NaiveDateTime, Timelike, Weekday};
use serde::{Deserialize, Serialize};

use super::scalar_encoder::{ScalarEncoder, ScalarEncoderParams};
use super::sdr::Sdr;

pub use super::scalar_encoder::EncoderError;

/// Parameters of a [`DateEncoder`]. A width is the number of active bits
/// of that part; width 0 disables the part. Radii are in the part's unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DateEncoderParams {
    /// Active bits of the season (day of year) part.
    pub season_width: u32,
    /// Days of year that share bits (default 91.5, a season).
    pub season_radius: f64,
    /// Active bits of the day-of-week part.
    pub day_of_week_width: u32,
    /// Days of week that share bits (default 1).
    pub day_of_week_radius: f64,
    /// Active bits per category of the weekend part (its size is twice this).
    pub weekend_width: u32,
    /// Active bits of the time-of-day part.
    pub time_of_day_width: u32,
    /// Hours that share bits (default 4).
    pub time_of_day_radius: f64,
}

impl Default for DateEncoderParams {
    /// Every part disabled, with htm.core's default radii.
    fn default() -> Self {
        Self {
            season_width: 0,
            season_radius: 91.5,
            day_of_week_width: 0,
            day_of_week_radius: 1.0,
            weekend_width: 0,
            time_of_day_width: 0,
            time_of_day_radius: 4.0,
        }
    }
}

/// One enabled part: its encoder and where its bits start in the output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Part {
    encoder: ScalarEncoder,
    offset: u32,
}

/// Encodes a timestamp; see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DateEncoder {
    params: DateEncoderParams,
    season: Option<Part>,
    day_of_week: Option<Part>,
    weekend: Option<Part>,
    time_of_day: Option<Part>,
    /// Sum of the enabled parts' sizes.
    size: u32,
}

/// A periodic `[0, maximum]` encoder of `width` bits and `radius`, or
/// `None` for width 0. `name` prefixes the parameter names in errors.
fn periodic_part(
    name: &str,
    width: u32,
    maximum: f64,
    radius: f64,
) -> Result<Option<ScalarEncoder>, EncoderError> {
    if width == 0 {
        return Ok(None);
    }
    if !(radius.is_finite() && radius > 0.0) {
        return Err(EncoderError::InvalidParams {
            encoder: "DateEncoder",
            reason: format!("`{name}_radius` must be a positive finite number, got {radius}"),
        });
    }
    ScalarEncoder::new(ScalarEncoderParams {
        minimum: 0.0,
        maximum,
        periodic: true,
        active_bits: width,
        radius,
        ..Default::default()
    })
    .map(Some)
    .map_err(|err| EncoderError::InvalidParams {
        encoder: "DateEncoder",
        reason: format!("`{name}_width` / `{name}_radius`: {err}"),
    })
}

impl DateEncoder {
    /// Build the enabled parts. A width of 0 disables a part; with every
    /// width 0 the encoder is valid and has size 0 (no date input).
    pub fn new(params: DateEncoderParams) -> Result<DateEncoder, EncoderError> {
        let season = periodic_part("season", params.season_width, 366.0, params.season_radius)?;
        let day_of_week = periodic_part(
            "day_of_week",
            params.day_of_week_width,
            7.0,
            params.day_of_week_radius,
        )?;
        let weekend = if params.weekend_width == 0 {
            None
        } else {
            let encoder = ScalarEncoder::new(ScalarEncoderParams {
                minimum: 0.0,
                maximum: 1.0,
                category: true,
                active_bits: params.weekend_width,
                ..Default::default()
            })
            .map_err(|err| EncoderError::InvalidParams {
                encoder: "DateEncoder",
                reason: format!("`weekend_width`: {err}"),
            })?;
            Some(encoder)
        };
        let time_of_day = periodic_part(
            "time_of_day",
            params.time_of_day_width,
            24.0,
            params.time_of_day_radius,
        )?;

        let mut size = 0u32;
        let mut place = |encoder: Option<ScalarEncoder>| -> Result<Option<Part>, EncoderError> {
            Ok(match encoder {
                None => None,
                Some(encoder) => {
                    let offset = size;
                    size = size.checked_add(encoder.size()).ok_or_else(|| {
                        EncoderError::InvalidParams {
                            encoder: "DateEncoder",
                            reason: "the total size overflows u32".into(),
                        }
                    })?;
                    Some(Part { encoder, offset })
                }
            })
        };
        // Output order: season, day of week, weekend, time of day.
        let season = place(season)?;
        let day_of_week = place(day_of_week)?;
        let weekend = place(weekend)?;
        let time_of_day = place(time_of_day)?;
        Ok(DateEncoder {
            params,
            season,
            day_of_week,
            weekend,
            time_of_day,
            size,
        })
    }

    /// Output width in bits (sum of the enabled parts).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The parameters this encoder was built from.
    pub fn params(&self) -> &DateEncoderParams {
        &self.params
    }

    /// Encodes the wall-clock fields of the timestamp as given (naive local
    /// time) into `out` (resized to [`DateEncoder::size`] if its size
    /// differs). No allocation once `out` has the size and capacity.
    pub fn encode(&self, timestamp: NaiveDateTime, out: &mut Sdr) {
        if out.size() != self.size {
            *out = Sdr::new(self.size);
        }
        let values = InputValues::of(timestamp);
        let parts = [
            (&self.season, values.season),
            (&self.day_of_week, values.day_of_week),
            (&self.weekend, values.weekend),
            (&self.time_of_day, values.time_of_day),
        ];
        let starts = parts.map(|(part, value)| {
            part.as_ref().map(|part| {
                let start = part
                    .encoder
                    .bucket(value)
                    // Every value is inside its part's range by
                    // construction (InputValues), so this cannot fail.
                    .expect("date part value within range")
                    .expect("date part value is not NaN");
                (part, start)
            })
        });
        out.set_indices(
            starts.into_iter().flatten().flat_map(|(part, start)| {
                part.encoder.bits(start).map(move |bit| bit + part.offset)
            }),
        );
    }
}

/// The value each part encodes, from the wall-clock fields of a timestamp.
#[derive(Clone, Copy, Debug, PartialEq)]
struct InputValues {
    /// Day of year, 0-based: [0, 365].
    season: f64,
    /// Monday = 0, continuous, shifted by half a day: [0, 7).
    day_of_week: f64,
    /// 0 or 1.
    weekend: f64,
    /// `hour + minute / 60`: [0, 24).
    time_of_day: f64,
}

impl InputValues {
    fn of(t: NaiveDateTime) -> Self {
        let time_of_day = f64::from(t.hour()) + f64::from(t.minute()) / 60.0;
        let weekday = t.weekday();
        let mut day_of_week = f64::from(weekday.num_days_from_monday()) + time_of_day / 24.0 - 0.5;
        if day_of_week < 0.0 {
            day_of_week += 7.0;
        }
        let weekend = match weekday {
            Weekday::Sat | Weekday::Sun => true,
            Weekday::Fri => time_of_day > 18.0,
            _ => false,
        };
        Self {
            season: f64::from(t.ordinal0()),
            day_of_week,
            weekend: if weekend { 1.0 } else { 0.0 },
            time_of_day,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use proptest::prelude::*;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    fn bits(enc: &DateEncoder, t: NaiveDateTime) -> Vec<u32> {
        let mut out = Sdr::new(enc.size());
        enc.encode(t, &mut out);
        out.indices().to_vec()
    }

    fn runs(ranges: &[std::ops::RangeInclusive<u32>]) -> Vec<u32> {
        let mut v: Vec<u32> = ranges.iter().flat_map(|r| r.clone()).collect();
        v.sort_unstable();
        v
    }

    fn time_only(width: u32, radius: f64) -> DateEncoder {
        DateEncoder::new(DateEncoderParams {
            time_of_day_width: width,
            time_of_day_radius: radius,
            ..Default::default()
        })
        .unwrap()
    }

    /// htm-reference.md §11, hotgym setup: weekend 21, timeOfDay (30, 1).
    #[test]
    fn hotgym_reference_vectors() {
        let enc = DateEncoder::new(DateEncoderParams {
            weekend_width: 21,
            time_of_day_width: 30,
            time_of_day_radius: 1.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(enc.size(), 762);
        assert_eq!(bits(&enc, at(2010, 7, 2, 0, 0)), runs(&[0..=20, 42..=71]));
        assert_eq!(
            bits(&enc, at(2010, 7, 3, 13, 0)),
            runs(&[21..=41, 432..=461])
        );
        assert_eq!(
            bits(&enc, at(2010, 7, 2, 19, 0)),
            runs(&[21..=41, 612..=641])
        );
        assert_eq!(
            bits(&enc, at(2010, 7, 5, 23, 0)),
            runs(&[0..=20, 732..=761])
        );
    }

    /// htm-reference.md §11, NAB setup: timeOfDay (21, 9.49) only.
    #[test]
    fn nab_reference_vectors() {
        let enc = time_only(21, 9.49);
        assert_eq!(enc.size(), 54);
        let day = |h| at(2015, 3, 10, h, 0);
        assert_eq!(bits(&enc, day(0)), runs(&[0..=20]));
        assert_eq!(bits(&enc, day(13)), runs(&[29..=49]));
        assert_eq!(bits(&enc, day(19)), runs(&[0..=8, 42..=53]));
        assert_eq!(bits(&enc, day(23)), runs(&[0..=17, 51..=53]));
    }

    /// htm.core DateEncoderTest: time of day, width 4, radius 4 → 24 bits.
    #[test]
    fn time_of_day_width_4_radius_4() {
        let enc = time_only(4, 4.0);
        assert_eq!(enc.size(), 24);
        assert_eq!(bits(&enc, at(2020, 1, 1, 0, 0)), vec![0, 1, 2, 3]);
        assert_eq!(bits(&enc, at(2020, 1, 1, 14, 45)), vec![15, 16, 17, 18]);
        assert_eq!(bits(&enc, at(2020, 1, 1, 22, 59)), vec![0, 1, 2, 23]);
        assert_eq!(bits(&enc, at(2020, 1, 1, 20, 0)), vec![20, 21, 22, 23]);
    }

    /// Worked sizes of htm-reference.md §1.3.
    #[test]
    fn worked_sizes() {
        assert_eq!(time_only(21, 9.49).size(), 54);
        assert_eq!(time_only(30, 1.0).size(), 720);
        let weekend = DateEncoder::new(DateEncoderParams {
            weekend_width: 21,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(weekend.size(), 42);
    }

    #[test]
    fn seconds_are_ignored() {
        let enc = time_only(21, 9.49);
        let t = NaiveDate::from_ymd_opt(2015, 3, 10).unwrap();
        // 10:10:59 is 10.1667 h by the python rule (/ 0.45190 = 22.497 →
        // bucket 22) but 10.1831 h with seconds (22.53 → 23), so this
        // instant tells the two rules apart.
        let with_seconds = t.and_hms_opt(10, 10, 59).unwrap();
        let without = t.and_hms_opt(10, 10, 0).unwrap();
        assert_eq!(bits(&enc, with_seconds), bits(&enc, without));
        assert_eq!(bits(&enc, without)[0], 22);
    }

    #[test]
    fn weekend_rule() {
        let enc = DateEncoder::new(DateEncoderParams {
            weekend_width: 2,
            ..Default::default()
        })
        .unwrap();
        let (weekday, weekend) = (vec![0, 1], vec![2, 3]);
        // 2010-07-02 is a Friday.
        assert_eq!(bits(&enc, at(2010, 7, 2, 18, 0)), weekday);
        assert_eq!(bits(&enc, at(2010, 7, 2, 18, 1)), weekend);
        assert_eq!(bits(&enc, at(2010, 7, 2, 23, 59)), weekend);
        assert_eq!(bits(&enc, at(2010, 7, 3, 0, 0)), weekend);
        assert_eq!(bits(&enc, at(2010, 7, 4, 23, 59)), weekend);
        assert_eq!(bits(&enc, at(2010, 7, 5, 0, 0)), weekday);
        assert_eq!(bits(&enc, at(2010, 7, 8, 20, 0)), weekday);
    }

    #[test]
    fn season() {
        // Width 3, radius 91.5 → resolution 30.5 days, 12 bits.
        let enc = DateEncoder::new(DateEncoderParams {
            season_width: 3,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(enc.size(), 12);
        assert_eq!(bits(&enc, at(2021, 1, 1, 12, 0)), vec![0, 1, 2]);
        // Day 45 (Feb 15) → 1.475 → 1.
        assert_eq!(bits(&enc, at(2021, 2, 15, 0, 0)), vec![1, 2, 3]);
        // Day 46 → 1.508 → 2.
        assert_eq!(bits(&enc, at(2021, 2, 16, 0, 0)), vec![2, 3, 4]);
        // The last day of a leap year (day 365) wraps next to Jan 1.
        assert_eq!(bits(&enc, at(2020, 12, 31, 0, 0)), vec![0, 1, 2]);
        // Day 320 → 10.49 → 10: wraps past the end.
        assert_eq!(bits(&enc, at(2021, 11, 17, 0, 0)), vec![0, 10, 11]);
    }

    #[test]
    fn day_of_week_python_rule() {
        // Width 2, radius 1 → resolution 0.5 days, 14 bits.
        let enc = DateEncoder::new(DateEncoderParams {
            day_of_week_width: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(enc.size(), 14);
        // 2010-07-05 is a Monday. Monday noon is value 0.
        assert_eq!(bits(&enc, at(2010, 7, 5, 12, 0)), vec![0, 1]);
        // Monday midnight is value 6.5 (half-way from Sunday noon).
        assert_eq!(bits(&enc, at(2010, 7, 5, 0, 0)), vec![0, 13]);
        // Tuesday noon is value 1.
        assert_eq!(bits(&enc, at(2010, 7, 6, 12, 0)), vec![2, 3]);
        // Sunday 06:00 → 6 + 0.25 - 0.5 = 5.75 → 11.5 → 12.
        assert_eq!(bits(&enc, at(2010, 7, 4, 6, 0)), vec![12, 13]);
        // Wednesday 17:00 → 2 + 0.7083 - 0.5 = 2.2083 → 4.42 → 4.
        assert_eq!(bits(&enc, at(2010, 7, 7, 17, 0)), vec![4, 5]);
    }

    #[test]
    fn parts_are_concatenated_in_order() {
        let params = DateEncoderParams {
            season_width: 3,
            day_of_week_width: 2,
            weekend_width: 2,
            time_of_day_width: 4,
            ..Default::default()
        };
        let enc = DateEncoder::new(params.clone()).unwrap();
        // season 12 + day of week 14 + weekend 4 + time of day 24.
        assert_eq!(enc.size(), 12 + 14 + 4 + 24);
        // Saturday 2010-07-03 (day of year 183) 14:45.
        let t = at(2010, 7, 3, 14, 45);
        // season: 183 / 30.5 = 6 → 6..=8
        // day of week: 5 + 14.75/24 - 0.5 = 5.1146 → 10.23 → 10 → 10..=11
        // weekend: 1 → 2..=3; time of day: 14.75 → 15 → 15..=18.
        let expected = runs(&[6..=8, 12 + 10..=12 + 11, 26 + 2..=26 + 3, 30 + 15..=30 + 18]);
        assert_eq!(bits(&enc, t), expected);
        // Same as encoding each part alone and concatenating.
        let alone = |p: DateEncoderParams| {
            let e = DateEncoder::new(p).unwrap();
            let mut out = Sdr::new(e.size());
            e.encode(t, &mut out);
            out
        };
        let none = DateEncoderParams {
            season_width: 0,
            day_of_week_width: 0,
            weekend_width: 0,
            time_of_day_width: 0,
            ..params.clone()
        };
        let parts = [
            alone(DateEncoderParams {
                season_width: 3,
                ..none.clone()
            }),
            alone(DateEncoderParams {
                day_of_week_width: 2,
                ..none.clone()
            }),
            alone(DateEncoderParams {
                weekend_width: 2,
                ..none.clone()
            }),
            alone(DateEncoderParams {
                time_of_day_width: 4,
                ..none.clone()
            }),
        ];
        let concat = Sdr::concat(&parts.iter().collect::<Vec<_>>());
        assert_eq!(concat.indices(), expected.as_slice());
    }

    #[test]
    fn all_parts_disabled_gives_an_empty_encoder() {
        let enc = DateEncoder::new(DateEncoderParams::default()).unwrap();
        assert_eq!(enc.size(), 0);
        let mut out = Sdr::new(5);
        enc.encode(at(2020, 2, 29, 1, 2), &mut out);
        assert_eq!(out.size(), 0);
        assert_eq!(out.count(), 0);
    }

    #[test]
    fn parameter_validation() {
        let cases = [
            (
                DateEncoderParams {
                    time_of_day_width: 4,
                    time_of_day_radius: 0.0,
                    ..Default::default()
                },
                "time_of_day_radius",
            ),
            (
                DateEncoderParams {
                    season_width: 4,
                    season_radius: f64::NAN,
                    ..Default::default()
                },
                "season_radius",
            ),
            (
                DateEncoderParams {
                    day_of_week_width: 3,
                    day_of_week_radius: -1.0,
                    ..Default::default()
                },
                "day_of_week_radius",
            ),
            (
                // Radius larger than the whole day: 1 band, 4 active bits.
                DateEncoderParams {
                    time_of_day_width: 4,
                    time_of_day_radius: 200.0,
                    ..Default::default()
                },
                "time_of_day_width",
            ),
        ];
        for (params, field) in cases {
            let err = DateEncoder::new(params.clone()).unwrap_err();
            assert!(
                matches!(&err, EncoderError::InvalidParams { encoder: "DateEncoder", reason }
                    if reason.contains(field)),
                "{params:?} gave {err:?}"
            );
        }
        // A radius is only checked when its part is enabled.
        assert!(DateEncoder::new(DateEncoderParams {
            season_radius: -3.0,
            weekend_width: 1,
            ..Default::default()
        })
        .is_ok());
    }

    #[test]
    fn params_deserialize_with_default_radii() {
        let p: DateEncoderParams = serde_json::from_str(r#"{"time_of_day_width": 21}"#).unwrap();
        assert_eq!(p.time_of_day_radius, 4.0);
        assert_eq!(p.season_radius, 91.5);
        assert_eq!(p.day_of_week_radius, 1.0);
        assert_eq!(p.weekend_width, 0);
        assert!(serde_json::from_str::<DateEncoderParams>(r#"{"holiday_width": 1}"#).is_err());
        let enc = DateEncoder::new(p).unwrap();
        // State round-trips exactly through the checkpoint codec (JSON
        // without `float_roundtrip` may move an f64 by one ulp).
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&enc, config).unwrap();
        let (back, _): (DateEncoder, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, enc);
    }

    proptest! {
        /// Any timestamp: each enabled part contributes exactly its width
        /// of bits inside its own slice, and encoding is deterministic.
        #[test]
        fn each_part_has_its_width(
            secs in 0i64..(200 * 365 * 86_400),
            widths in (0u32..8, 0u32..8, 0u32..8, 0u32..8),
        ) {
            let t = NaiveDate::from_ymd_opt(1950, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()
                + chrono::TimeDelta::seconds(secs);
            let (season_width, day_of_week_width, weekend_width, time_of_day_width) = widths;
            let enc = DateEncoder::new(DateEncoderParams {
                season_width,
                day_of_week_width,
                weekend_width,
                time_of_day_width,
                ..Default::default()
            }).unwrap();
            let mut out = Sdr::default();
            enc.encode(t, &mut out);
            prop_assert_eq!(out.size(), enc.size());
            let expected: u32 = season_width + day_of_week_width + weekend_width + time_of_day_width;
            prop_assert_eq!(out.count() as u32, expected);
            for part in [&enc.season, &enc.day_of_week, &enc.weekend, &enc.time_of_day]
                .into_iter()
                .flatten()
            {
                let inside = out
                    .indices()
                    .iter()
                    .filter(|&&b| b >= part.offset && b < part.offset + part.encoder.size())
                    .count() as u32;
                prop_assert_eq!(inside, part.encoder.active_bits());
            }
            let mut again = Sdr::new(enc.size());
            enc.encode(t, &mut again);
            prop_assert_eq!(out, again);
        }
    }
}
