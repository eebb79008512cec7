//! Malformed and hostile GGUF files: each is a clean error naming the field and byte offset, never
//! a panic and never an allocation the file's size cannot justify. Modelled on llama.cpp's
//! tests/test-gguf.cpp taxonomy of handcrafted files.

use gguftune::gguf::{self, Field, GgufErrorKind};

use crate::common::gguf_bytes::{array, kv, kv_str, kv_u32, string, RawGguf, RawTensor};
use crate::common::tiny_gguf::Rng;

/// One malformed-file case: how to break the valid file, and what the error must be.
struct Case {
    name: &'static str,
    make: fn() -> Vec<u8>,
    expect: fn(&GgufErrorKind) -> bool,
}

fn with(f: impl FnOnce(&mut RawGguf)) -> Vec<u8> {
    let mut raw = RawGguf::valid();
    f(&mut raw);
    raw.to_bytes()
}

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut value = array(0, 0, &[]);
    for _ in 1..depth {
        value = array(9, 1, &value);
    }
    value
}

const CASES: &[Case] = &[
    Case {
        name: "bad magic",
        make: || with(|r| r.magic = *b"GGML"),
        expect: |k| matches!(k, GgufErrorKind::BadMagic { .. }),
    },
    Case {
        name: "version 0",
        make: || with(|r| r.version = 0),
        expect: |k| matches!(k, GgufErrorKind::UnsupportedVersion { version: 0 }),
    },
    Case {
        name: "version 1",
        make: || with(|r| r.version = 1),
        expect: |k| matches!(k, GgufErrorKind::UnsupportedVersion { version: 1 }),
    },
    Case {
        name: "future version",
        make: || with(|r| r.version = 4),
        expect: |k| matches!(k, GgufErrorKind::UnsupportedVersion { version: 4 }),
    },
    Case {
        name: "byte-swapped version",
        make: || with(|r| r.version = 3u32.swap_bytes()),
        expect: |k| matches!(k, GgufErrorKind::UnsupportedVersion { .. }),
    },
    Case {
        name: "tensor count u64::MAX",
        make: || with(|r| r.tensor_count = Some(u64::MAX)),
        expect: |k| matches!(k, GgufErrorKind::CountTooLarge { .. }),
    },
    Case {
        name: "metadata count u64::MAX - 1",
        make: || with(|r| r.kv_count = Some(u64::MAX - 1)),
        expect: |k| matches!(k, GgufErrorKind::CountTooLarge { .. }),
    },
    Case {
        name: "tensor count one too many",
        make: || with(|r| r.tensor_count = Some(3)),
        expect: |k| {
            matches!(
                k,
                GgufErrorKind::Truncated { .. }
                    | GgufErrorKind::CountTooLarge { .. }
                    | GgufErrorKind::StringTooLong { .. }
                    | GgufErrorKind::TooManyDims { .. }
            )
        },
    },
    Case {
        name: "key length near u64::MAX",
        make: || {
            let mut b = RawGguf::valid().to_bytes();
            b[24..32].copy_from_slice(&(u64::MAX - 7).to_le_bytes());
            b
        },
        expect: |k| matches!(k, GgufErrorKind::StringTooLong { .. }),
    },
    Case {
        name: "empty key",
        make: || with(|r| r.kvs.push(kv_u32("", 1))),
        expect: |k| matches!(k, GgufErrorKind::EmptyKey),
    },
    Case {
        name: "duplicate key",
        make: || with(|r| r.kvs.push(kv_u32("llama.block_count", 3))),
        expect: |k| matches!(k, GgufErrorKind::DuplicateKey { .. }),
    },
    Case {
        name: "unknown value type 13",
        make: || with(|r| r.kvs.push(kv("x", 13, vec![0; 8]))),
        expect: |k| matches!(k, GgufErrorKind::UnknownValueType { id: 13 }),
    },
    Case {
        name: "unknown value type u32::MAX",
        make: || with(|r| r.kvs.push(kv("x", u32::MAX, vec![0; 8]))),
        expect: |k| matches!(k, GgufErrorKind::UnknownValueType { .. }),
    },
    Case {
        name: "bad UTF-8 key",
        make: || with(|r| r.kvs[0].key = vec![b'a', 0xff, 0xfe]),
        expect: |k| matches!(k, GgufErrorKind::InvalidUtf8 { valid_up_to: 1 }),
    },
    Case {
        name: "bad UTF-8 string value",
        make: || with(|r| r.kvs.push(kv("s", 8, string(&[0xc3, 0x28])))),
        expect: |k| matches!(k, GgufErrorKind::InvalidUtf8 { .. }),
    },
    Case {
        name: "string value longer than file",
        make: || with(|r| r.kvs.push(kv("s", 8, (1u64 << 40).to_le_bytes().to_vec()))),
        expect: |k| matches!(k, GgufErrorKind::StringTooLong { .. }),
    },
    Case {
        name: "array count u64::MAX",
        make: || with(|r| r.kvs.push(kv("a", 9, array(6, u64::MAX, &[])))),
        expect: |k| matches!(k, GgufErrorKind::CountTooLarge { .. }),
    },
    Case {
        name: "array of strings count too large",
        make: || with(|r| r.kvs.push(kv("a", 9, array(8, 1 << 32, &[])))),
        expect: |k| matches!(k, GgufErrorKind::CountTooLarge { .. }),
    },
    Case {
        name: "array of unknown element type",
        make: || with(|r| r.kvs.push(kv("a", 9, array(99, 1, &[0])))),
        expect: |k| matches!(k, GgufErrorKind::UnknownValueType { id: 99 }),
    },
    Case {
        name: "arrays nested too deep",
        make: || with(|r| r.kvs.push(kv("a", 9, nested_arrays(gguf::MAX_ARRAY_NESTING + 1)))),
        expect: |k| matches!(k, GgufErrorKind::NestingTooDeep { .. }),
    },
    Case {
        name: "alignment not a power of two",
        make: || with(|r| r.kvs.push(kv_u32("general.alignment", 48))),
        expect: |k| matches!(k, GgufErrorKind::AlignmentNotPowerOfTwo { alignment: 48 }),
    },
    Case {
        name: "alignment zero",
        make: || with(|r| r.kvs.push(kv_u32("general.alignment", 0))),
        expect: |k| matches!(k, GgufErrorKind::AlignmentNotPowerOfTwo { alignment: 0 }),
    },
    Case {
        name: "alignment of wrong type",
        make: || with(|r| r.kvs.push(kv_str("general.alignment", "32"))),
        expect: |k| matches!(k, GgufErrorKind::AlignmentWrongType { .. }),
    },
    Case {
        name: "tensor name too long",
        make: || with(|r| r.tensors[0].name = vec![b'n'; 64]),
        expect: |k| matches!(k, GgufErrorKind::NameTooLong { len: 64, .. }),
    },
    Case {
        name: "bad UTF-8 tensor name",
        make: || with(|r| r.tensors[0].name = vec![0xff]),
        expect: |k| matches!(k, GgufErrorKind::InvalidUtf8 { .. }),
    },
    Case {
        name: "duplicate tensor name",
        make: || with(|r| r.tensors[1].name = r.tensors[0].name.clone()),
        expect: |k| matches!(k, GgufErrorKind::DuplicateTensorName),
    },
    Case {
        name: "five dimensions",
        make: || with(|r| r.tensors[0].ne = vec![8, 1, 1, 1, 1]),
        expect: |k| matches!(k, GgufErrorKind::TooManyDims { n_dims: 5, .. }),
    },
    Case {
        name: "zero dimensions",
        make: || with(|r| r.tensors[0].ne = vec![]),
        expect: |k| matches!(k, GgufErrorKind::TooManyDims { n_dims: 0, .. }),
    },
    Case {
        name: "element count overflows",
        make: || with(|r| r.tensors[0].ne = vec![1 << 32, 1 << 32]),
        expect: |k| matches!(k, GgufErrorKind::ElementCountOverflow { .. }),
    },
    Case {
        name: "dimension u64::MAX",
        make: || with(|r| r.tensors[0].ne = vec![u64::MAX]),
        expect: |k| matches!(k, GgufErrorKind::ElementCountOverflow { .. }),
    },
    Case {
        name: "unknown tensor type (removed Q4_2)",
        make: || with(|r| r.tensors[0].type_id = 4),
        expect: |k| matches!(k, GgufErrorKind::UnknownTensorType { id: 4 }),
    },
    Case {
        name: "unknown tensor type u32::MAX",
        make: || with(|r| r.tensors[0].type_id = u32::MAX),
        expect: |k| matches!(k, GgufErrorKind::UnknownTensorType { .. }),
    },
    Case {
        name: "row not a multiple of the block",
        make: || {
            with(|r| {
                r.tensors[0].type_id = 8;
                r.tensors[0].ne = vec![33];
            })
        },
        expect: |k| matches!(k, GgufErrorKind::RowNotBlockMultiple { ne0: 33, .. }),
    },
    Case {
        name: "misaligned offset",
        make: || with(|r| r.tensors[1].offset = 33),
        expect: |k| matches!(k, GgufErrorKind::OffsetMisaligned { offset: 33, .. }),
    },
    Case {
        name: "offset past the end",
        make: || with(|r| r.tensors[1].offset = 1 << 20),
        expect: |k| matches!(k, GgufErrorKind::DataPastEnd { .. }),
    },
    Case {
        name: "offset near u64::MAX",
        make: || with(|r| r.tensors[1].offset = u64::MAX - 31),
        expect: |k| matches!(k, GgufErrorKind::DataPastEnd { .. }),
    },
    Case {
        name: "overlapping tensors",
        make: || with(|r| r.tensors[1].offset = 0),
        expect: |k| matches!(k, GgufErrorKind::DataOverlap { .. }),
    },
    Case {
        name: "data truncated",
        make: || {
            let mut b = RawGguf::valid().to_bytes();
            b.truncate(b.len() - 1);
            b
        },
        expect: |k| matches!(k, GgufErrorKind::DataPastEnd { .. }),
    },
    Case {
        name: "data section missing",
        make: || with(|r| r.data.clear()),
        expect: |k| matches!(k, GgufErrorKind::DataPastEnd { .. } | GgufErrorKind::Truncated { .. }),
    },
    Case {
        name: "tensor bigger than file",
        make: || {
            with(|r| r.tensors.push(RawTensor { name: b"big".to_vec(), ne: vec![1 << 40], type_id: 0, offset: 64 }))
        },
        expect: |k| matches!(k, GgufErrorKind::DataPastEnd { .. }),
    },
];

#[test]
fn every_malformed_case_is_a_typed_error_naming_field_and_offset() {
    assert!(CASES.len() >= 20);
    for case in CASES {
        let bytes = (case.make)();
        let err = match gguf::parse(&bytes) {
            Ok(_) => panic!("case '{}': parsed a malformed file", case.name),
            Err(e) => e,
        };
        assert!((case.expect)(err.kind()), "case '{}': unexpected error {err:?}", case.name);
        assert!(
            err.offset <= bytes.len() as u64 || matches!(err.kind, GgufErrorKind::DataPastEnd { .. }),
            "case '{}': offset {} beyond file",
            case.name,
            err.offset
        );
        let message = err.to_string();
        assert!(message.starts_with(&format!("byte {:#x}: ", err.offset)), "case '{}': {message}", case.name);
        assert!(message.contains(&err.field.to_string()), "case '{}': {message}", case.name);
    }
}

#[test]
fn errors_name_the_right_field() {
    let err = gguf::parse(&with(|r| r.tensors[1].offset = 33)).unwrap_err();
    assert_eq!(err.field, Field::TensorOffset { name: "b.weight".into() });
    assert!(
        err.to_string().contains("offset of tensor 'b.weight': offset 33 is not a multiple of alignment 32"),
        "{err}"
    );
    let err = gguf::parse(&with(|r| r.kvs.push(kv("s", 8, string(&[0xc3, 0x28]))))).unwrap_err();
    assert_eq!(err.field, Field::KvValue { key: "s".into() });
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let dir = crate::common::temp_dir();
    let path = dir.path().join("sample.gguf");
    crate::common::tiny_gguf::write_sample(&path, 11);
    let bytes = std::fs::read(&path).unwrap();
    let g = gguf::parse(&bytes).unwrap();
    // The padding after the last tensor is optional; everything before its end is required.
    let end = g.tensors.iter().map(|t| g.data_offset + t.offset + t.n_bytes).max().unwrap() as usize;
    assert!(end > bytes.len() - 32);
    for len in 0..end {
        assert!(gguf::parse(&bytes[..len]).is_err(), "prefix of {len} bytes parsed");
    }
}

#[test]
fn extreme_values_in_every_header_word_are_errors_or_valid_reads() {
    let (bytes, sections) = RawGguf::valid().layout();
    let header_region = sections.data_start;
    for pos in (0..header_region.saturating_sub(3)).step_by(1) {
        for value in [u32::MAX, 0x8000_0000, 0, 1, 0x7fff_ffff] {
            let mut b = bytes.clone();
            b[pos..pos + 4].copy_from_slice(&value.to_le_bytes());
            check_no_misbehaviour(&b);
        }
        if pos + 8 <= header_region {
            for value in [u64::MAX, u64::MAX / 2, 1 << 32, 1 << 62] {
                let mut b = bytes.clone();
                b[pos..pos + 8].copy_from_slice(&value.to_le_bytes());
                check_no_misbehaviour(&b);
            }
        }
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let dir = crate::common::temp_dir();
    let path = dir.path().join("sample.gguf");
    crate::common::tiny_gguf::write_sample(&path, 5);
    let original = std::fs::read(&path).unwrap();
    let seed = 0x5eed;
    let mut rng = Rng::new(seed);
    for _ in 0..3000 {
        let mut b = original.clone();
        let n_flips = 1 + (rng.next_u64() % 4) as usize;
        for _ in 0..n_flips {
            let pos = (rng.next_u64() % b.len() as u64) as usize;
            b[pos] ^= 1 << (rng.next_u64() % 8);
        }
        check_no_misbehaviour(&b);
    }
}

/// A parse either fails cleanly or yields an index whose every tensor slice can be touched.
fn check_no_misbehaviour(bytes: &[u8]) {
    if let Ok(g) = gguf::parse(bytes) {
        for t in &g.tensors {
            let data = g.tensor_data(t);
            assert_eq!(data.len() as u64, t.n_bytes);
            std::hint::black_box(data.iter().fold(0u8, |a, &b| a ^ b));
        }
        for (_, v) in &g.metadata {
            if let Some(a) = v.as_array() {
                std::hint::black_box(a.to_owned_array());
            }
        }
    }
}
