//! Property tests of banyan-core's decoders, which double as its fuzzer.
//!
//! Everything here reads what a peer sends: the MessagePack envelope
//! (`validate`, `decode`), the JSON rules (`to_json`, `from_json`) and the
//! monitor's formats. Each property runs a few hundred generated inputs in
//! `cargo test`, so the suite stays fast; `scripts/fuzz` runs the same
//! properties for as long as it is asked (`FUZZ_SECONDS` per target, or
//! `PROPTEST_CASES` inputs) and reads the `fuzz target` lines they print.
//! A failure proptest finds is shrunk to a small input; it then becomes a
//! regression test in the unit tests of the module at fault.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use banyan_core::envelope::{self, Message};
use banyan_core::json;
use banyan_core::monitor::{format_message, MonitorConfig, MonitorFormat};
use banyan_core::pyrepr;
use banyan_core::rmpv::{self, Value};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Inputs per property in `cargo test`.
const SUITE_CASES: u32 = 256;

/// Runs `test` on inputs from `strategy`: `PROPTEST_CASES` of them (default
/// [`SUITE_CASES`]), or batches of them until `FUZZ_SECONDS` have passed.
/// Prints `fuzz target NAME: N inputs tried, F failures` for `scripts/fuzz`.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(SUITE_CASES);
    let budget = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let config = Config {
        cases,
        // A failure becomes a written regression test, not a seed file.
        failure_persistence: None,
        ..Config::default()
    };
    let tried = AtomicU64::new(0);
    let started = Instant::now();
    let result = loop {
        let mut runner = TestRunner::new(config.clone());
        let result = runner.run(&strategy, |input| {
            tried.fetch_add(1, Ordering::Relaxed);
            test(input)
        });
        let more = budget.is_some_and(|b| started.elapsed() < b);
        if result.is_err() || !more {
            break result;
        }
    };
    println!(
        "fuzz target {name}: {} inputs tried, {} failures, {:.1} s",
        tried.load(Ordering::Relaxed),
        usize::from(result.is_err()),
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Any MessagePack value, nested a few levels, with the awkward cases
/// weighted in: invalid UTF-8 strs, non-finite floats, every key kind.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f32>().prop_map(Value::F32),
        any::<f64>().prop_map(Value::F64),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            Just(5e-324)
        ]
        .prop_map(Value::F64),
        any::<String>().prop_map(Value::from),
        // a str of any bytes, UTF-8 or not, as a peer may send it
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| {
            let mut bytes = vec![0xa0 | b.len() as u8];
            bytes.extend(b);
            envelope::decode(&bytes).unwrap_or(Value::Nil)
        }),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(t, d)| Value::Ext(t, d)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..8).prop_map(Value::Map),
        ]
    })
}

/// Values JSON carries exactly: strings, finite doubles, ints, bin, ext,
/// arrays and maps with distinct str keys (none of them `$`-tags).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::F64),
        any::<String>().prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(t, d)| Value::Ext(t, d)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z\u{e9}\u{1f389}]{0,4}", inner, 0..8).prop_map(
                |m| Value::Map(m.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            ),
        ]
    })
}

/// Bytes near valid MessagePack: an encoding, cut, with a byte changed or
/// inserted, so the decoders' deeper paths are reached, not only their
/// first check.
fn near_msgpack() -> impl Strategy<Value = Vec<u8>> {
    (any_value(), any::<usize>(), any::<u8>(), 0..4u8).prop_map(|(value, at, byte, how)| {
        let mut bytes = envelope::encode(&value);
        let at = at % (bytes.len() + 1);
        match how {
            0 => bytes.truncate(at),
            1 if at < bytes.len() => bytes[at] = byte,
            2 => bytes.insert(at, byte),
            _ => {}
        }
        bytes
    })
}

fn payload_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        near_msgpack(),
    ]
}

/// msgpack-numpy maps with arbitrary dtype strings, shapes and data, the
/// input of the monitor's `-m True` (where a dtype once made it panic).
fn numpy_like() -> impl Strategy<Value = Value> {
    let dtype = prop_oneof![
        "[<>|=]?[biufcOUV]?[0-9]{0,3}",
        any::<String>(),
        Just(String::new()),
    ];
    (
        any::<bool>(),
        dtype,
        proptest::collection::vec(0u64..5, 0..4),
        proptest::collection::vec(any::<u8>(), 0..96),
        prop_oneof![Just(Vec::new()), Just(b"V".to_vec()), Just(b"O".to_vec())],
    )
        .prop_map(|(nd, dtype, shape, data, kind)| {
            Value::Map(vec![
                (Value::Binary(b"nd".to_vec()), Value::Boolean(nd)),
                (Value::Binary(b"type".to_vec()), Value::from(dtype)),
                (Value::Binary(b"kind".to_vec()), Value::Binary(kind)),
                (
                    Value::Binary(b"shape".to_vec()),
                    Value::Array(shape.into_iter().map(Value::from).collect()),
                ),
                (Value::Binary(b"data".to_vec()), Value::Binary(data)),
            ])
        })
}

const MONITOR_CONFIGS: [MonitorConfig; 4] = [
    MonitorConfig {
        numpy: false,
        format: MonitorFormat::Python,
    },
    MonitorConfig {
        numpy: true,
        format: MonitorFormat::Python,
    },
    MonitorConfig {
        numpy: false,
        format: MonitorFormat::Json,
    },
    MonitorConfig {
        numpy: true,
        format: MonitorFormat::Json,
    },
];

#[test]
fn envelope_validate_and_decode_agree_with_each_other_and_rmpv() {
    fuzz("envelope", payload_bytes(), |bytes| {
        let validated = envelope::validate(&bytes);
        let decoded = envelope::decode(&bytes);
        // Inputs this small nest less deep than MAX_DEPTH.
        prop_assert_eq!(
            validated.is_ok(),
            decoded.is_ok(),
            "{:?} {:?}",
            validated,
            decoded
        );
        if let Ok(value) = decoded {
            let mut rest = bytes.as_slice();
            let reference = rmpv::decode::read_value(&mut rest);
            prop_assert!(rest.is_empty(), "rmpv left {} bytes", rest.len());
            let reference = reference.map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Compared as encodings: NaN is not equal to itself as a Value.
            prop_assert_eq!(envelope::encode(&value), envelope::encode(&reference));
        }
        Ok(())
    });
}

#[test]
fn envelope_encode_decode_round_trips_every_value() {
    fuzz("envelope-round-trip", any_value(), |value| {
        let bytes = envelope::encode(&value);
        prop_assert!(envelope::validate(&bytes).is_ok());
        let back = envelope::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(envelope::encode(&back), bytes);
        Ok(())
    });
}

#[test]
fn json_never_panics_and_display_agrees() {
    fuzz("json-write", any_value(), |value| {
        let strict = json::to_json_strict(&value);
        let display = json::to_display(&value);
        match json::to_json(&value) {
            Ok(text) => {
                prop_assert_eq!(&display, &text);
                // what we write, we read
                prop_assert!(json::from_json(&text).is_ok(), "{}", text);
                prop_assert!(text.is_ascii());
                if let Ok(strict) = strict {
                    prop_assert_eq!(strict, text);
                }
            }
            Err(_) => prop_assert!(strict.is_err()),
        }
        Ok(())
    });
}

#[test]
fn json_round_trips_what_json_carries() {
    fuzz("json-round-trip", json_value(), |value| {
        let text = json::to_json(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = json::from_json(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, value);
        Ok(())
    });
}

#[test]
fn json_reading_never_panics() {
    let text = prop_oneof![
        any::<String>(),
        // JSON's own characters, so parsing goes deep
        "[\\[\\]{}\",:0-9.eE+\\- \\\\/ubfnrtNaINfiy\u{e9}\u{1f389}\u{d7ff}]{0,64}",
        json_value().prop_map(|v| json::to_json(&v).unwrap_or_default()),
    ];
    fuzz("json-read", text, |text| {
        if let Ok(value) = json::from_json(&text) {
            // what we read, we write back
            prop_assert!(json::to_json(&value).is_ok());
        }
        prop_assert_eq!(
            json::from_json_slice(text.as_bytes()).is_ok(),
            json::from_json(&text).is_ok()
        );
        Ok(())
    });
    fuzz(
        "json-read-bytes",
        proptest::collection::vec(any::<u8>(), 0..64),
        |bytes| {
            let _ = json::from_json_slice(&bytes);
            Ok(())
        },
    );
}

#[test]
fn monitor_formats_never_panic() {
    fuzz("monitor-bytes", payload_bytes(), |bytes| {
        let message = Message::from_raw("t", bytes);
        for config in &MONITOR_CONFIGS {
            let line = format_message(&message, config);
            prop_assert!(line.starts_with("t "));
        }
        Ok(())
    });
    let values = prop_oneof![
        any_value(),
        numpy_like(),
        (numpy_like(), any_value()).prop_map(|(array, other)| Value::Map(vec![
            (Value::from("array"), array),
            (Value::Binary(b"other".to_vec()), other)
        ])),
    ];
    fuzz("monitor-values", values, |value| {
        let message = Message::new("t", &value);
        for config in &MONITOR_CONFIGS {
            let line = format_message(&message, config);
            prop_assert!(line.starts_with("t "));
        }
        prop_assert!(!pyrepr::repr(&value).contains('\n'));
        let _ = pyrepr::repr_numpy(&value);
        Ok(())
    });
}
