//! Reading and writing GGUF: every value type, tensor data, streaming, round trips, atomicity.

use std::fs;

use gguftune::gguf::{self, GgmlType, GgufFile, GgufPlan, GgufWriteError, GgufWriter, MetaValue, Value};
use proptest::prelude::*;

use crate::common::tiny_gguf::{every_value_type, write_sample};
use crate::common::{gguf_bytes::RawGguf, temp_dir};

#[test]
fn reads_back_every_value_type_and_tensor() {
    let dir = temp_dir();
    let path = dir.path().join("sample.gguf");
    let data = write_sample(&path, 7);
    let file = GgufFile::open(&path).unwrap();
    let g = file.gguf().unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.get_str("general.architecture"), Some("sample"));
    for (key, expected) in every_value_type() {
        let got = g.get(&key).unwrap_or_else(|| panic!("key {key} missing"));
        assert_eq!(got.to_owned_value(), expected, "key {key}");
    }
    assert_eq!(g.get("test.u64").and_then(|v| v.as_u64()), Some(u64::MAX));
    assert_eq!(g.get("test.i8").and_then(|v| v.as_i64()), Some(-100));
    assert_eq!(g.get("test.i8").and_then(|v| v.as_u64()), None, "negative values never become unsigned");
    assert_eq!(g.tensors.len(), data.len());
    for (info, (name, bytes)) in g.tensors.iter().zip(&data) {
        assert_eq!(info.name, name);
        assert_eq!(info.offset % 32, 0);
        assert_eq!(g.tensor_data(info), &bytes[..], "tensor {name}");
    }
    let q4k = g.tensor("q4_k.weight").unwrap();
    assert_eq!((q4k.ty, q4k.ne.clone(), q4k.n_bytes), (GgmlType::Q4_K, vec![256, 1, 2], 288));
    // The file size is exactly what the plan predicted.
    assert_eq!(g.file_len(), fs::metadata(&path).unwrap().len());
}

#[test]
fn tensor_data_is_a_zero_copy_slice_of_the_mapping() {
    let dir = temp_dir();
    let path = dir.path().join("sample.gguf");
    write_sample(&path, 1);
    let file = GgufFile::open(&path).unwrap();
    let g = file.gguf().unwrap();
    let a = g.tensor_data(&g.tensors[0]).as_ptr() as usize;
    let b = g.tensor_data(&g.tensors[1]).as_ptr() as usize;
    assert_eq!(b - a, (g.tensors[1].offset - g.tensors[0].offset) as usize);
}

#[test]
fn reads_version_2_files() {
    let mut raw = RawGguf::valid();
    raw.version = 2;
    let bytes = raw.to_bytes();
    let g = gguf::parse(&bytes).unwrap();
    assert_eq!(g.version, 2);
    assert_eq!(g.tensors.len(), 2);
}

#[test]
fn honours_general_alignment() {
    let dir = temp_dir();
    let path = dir.path().join("aligned.gguf");
    let mut plan = GgufPlan::new();
    plan.add_kv("general.alignment", MetaValue::U32(64)).unwrap();
    plan.add_tensor("a", GgmlType::F32, &[3]).unwrap();
    plan.add_tensor("b", GgmlType::F32, &[5]).unwrap();
    let mut w = GgufWriter::create(&path, plan).unwrap();
    w.write_tensor("a", &[1u8; 12]).unwrap();
    w.write_tensor("b", &[2u8; 20]).unwrap();
    w.finish().unwrap();
    let file = GgufFile::open(&path).unwrap();
    let g = file.gguf().unwrap();
    assert_eq!(g.alignment, 64);
    assert_eq!(g.data_offset % 64, 0);
    assert_eq!(g.tensors[1].offset, 64);
    assert_eq!(g.tensor_data(&g.tensors[1]), &[2u8; 20]);
}

#[test]
fn round_trip_read_write_read_is_byte_identical() {
    let dir = temp_dir();
    let first = dir.path().join("first.gguf");
    let second = dir.path().join("second.gguf");
    write_sample(&first, 3);
    copy_gguf(&first, &second);
    assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
}

/// Reads `src` and writes everything it holds to `dst` with our writer.
fn copy_gguf(src: &std::path::Path, dst: &std::path::Path) {
    let file = GgufFile::open(src).unwrap();
    let g = file.gguf().unwrap();
    let mut plan = GgufPlan::new();
    for (k, v) in &g.metadata {
        plan.add_kv(k, v.to_owned_value()).unwrap();
    }
    for t in &g.tensors {
        plan.add_tensor(t.name, t.ty, &t.ne).unwrap();
    }
    let mut w = GgufWriter::create(dst, plan).unwrap();
    for t in &g.tensors {
        w.write_tensor(t.name, g.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn writer_checks_order_and_sizes_and_leaves_nothing_when_dropped() {
    let dir = temp_dir();
    let path = dir.path().join("out.gguf");
    let mut plan = GgufPlan::new();
    plan.add_tensor("a", GgmlType::F32, &[4]).unwrap();
    plan.add_tensor("b", GgmlType::F32, &[4]).unwrap();
    let mut w = GgufWriter::create(&path, plan).unwrap();
    assert!(matches!(w.write_tensor("b", &[0; 16]), Err(GgufWriteError::OutOfOrder { .. })));
    assert!(matches!(w.write_tensor("a", &[0; 15]), Err(GgufWriteError::WrongSize { expected: 16, .. })));
    w.write_tensor("a", &[0; 16]).unwrap();
    drop(w);
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "no output and no temporary file after an unfinished write: {leftovers:?}");

    let mut plan = GgufPlan::new();
    plan.add_tensor("a", GgmlType::F32, &[4]).unwrap();
    let w = GgufWriter::create(&path, plan).unwrap();
    assert!(matches!(w.finish(), Err(GgufWriteError::Incomplete { missing: 1, .. })));
    assert!(!path.exists());
}

#[test]
fn writer_replaces_an_existing_file_only_when_complete() {
    let dir = temp_dir();
    let path = dir.path().join("out.gguf");
    fs::write(&path, b"previous").unwrap();
    let mut plan = GgufPlan::new();
    plan.add_tensor("a", GgmlType::F32, &[4]).unwrap();
    let mut w = GgufWriter::create(&path, plan.clone()).unwrap();
    w.write_chunk("a", &[0; 8]).unwrap();
    drop(w);
    assert_eq!(fs::read(&path).unwrap(), b"previous");
    let mut w = GgufWriter::create(&path, plan).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    w.finish().unwrap();
    assert!(GgufFile::open(&path).is_ok());
}

#[test]
fn plan_rejects_what_ggml_cannot_hold() {
    let mut plan = GgufPlan::new();
    assert!(matches!(
        plan.add_tensor(&"x".repeat(64), GgmlType::F32, &[1]),
        Err(GgufWriteError::NameTooLong { len: 64, .. })
    ));
    assert!(matches!(plan.add_tensor("q", GgmlType::Q4_K, &[100]), Err(GgufWriteError::RowNotBlockMultiple { .. })));
    assert!(matches!(plan.add_tensor("d", GgmlType::F32, &[1, 1, 1, 1, 1]), Err(GgufWriteError::BadDims { .. })));
    assert!(matches!(plan.add_tensor("o", GgmlType::F32, &[u64::MAX, 2]), Err(GgufWriteError::SizeOverflow { .. })));
    plan.add_tensor("ok", GgmlType::F32, &[1]).unwrap();
    assert!(matches!(plan.add_tensor("ok", GgmlType::F32, &[1]), Err(GgufWriteError::DuplicateTensor { .. })));
    plan.add_kv("k", MetaValue::U8(1)).unwrap();
    assert!(matches!(plan.add_kv("k", MetaValue::U8(2)), Err(GgufWriteError::DuplicateKey { .. })));
    assert!(matches!(
        plan.add_kv("general.alignment", MetaValue::U32(48)),
        Err(GgufWriteError::BadAlignment { alignment: 48 })
    ));
    assert!(matches!(
        plan.add_kv("general.alignment", MetaValue::U64(64)),
        Err(GgufWriteError::AlignmentWrongType { .. })
    ));
}

#[test]
fn long_string_arrays_are_decoded_lazily_and_in_order() {
    let dir = temp_dir();
    let path = dir.path().join("vocab.gguf");
    let tokens: Vec<String> = (0..50_000).map(|i| format!("tok{i}")).collect();
    let mut plan = GgufPlan::new();
    plan.add_kv("tokenizer.ggml.tokens", MetaValue::Array(gguf::MetaArray::String(tokens.clone()))).unwrap();
    GgufWriter::create(&path, plan).unwrap().finish().unwrap();
    let file = GgufFile::open(&path).unwrap();
    let g = file.gguf().unwrap();
    let arr = g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).unwrap();
    assert_eq!(arr.len(), 50_000);
    assert!(arr.strings().unwrap().eq(tokens.iter().map(String::as_str)));
    assert!(matches!(arr.iter().nth(49_999), Some(Value::String("tok49999"))));
}

fn arb_array(depth: u32) -> BoxedStrategy<gguf::MetaArray> {
    use gguf::MetaArray as A;
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..5).prop_map(A::U8),
        prop::collection::vec(any::<i16>(), 0..5).prop_map(A::I16),
        prop::collection::vec(any::<u32>(), 0..5).prop_map(A::U32),
        prop::collection::vec(-1e6f32..1e6, 0..5).prop_map(A::F32),
        prop::collection::vec(any::<bool>(), 0..5).prop_map(A::Bool),
        prop::collection::vec(".{0,6}", 0..5).prop_map(A::String),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(A::I64),
        prop::collection::vec(-1e6f64..1e6, 0..5).prop_map(A::F64),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![leaf, prop::collection::vec(arb_array(depth - 1), 0..3).prop_map(A::Array)].boxed()
    }
}

fn arb_value() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        any::<u8>().prop_map(MetaValue::U8),
        any::<i8>().prop_map(MetaValue::I8),
        any::<u16>().prop_map(MetaValue::U16),
        any::<i16>().prop_map(MetaValue::I16),
        any::<u32>().prop_map(MetaValue::U32),
        any::<i32>().prop_map(MetaValue::I32),
        (-1e30f32..1e30).prop_map(MetaValue::F32),
        any::<bool>().prop_map(MetaValue::Bool),
        ".{0,12}".prop_map(MetaValue::String),
        any::<u64>().prop_map(MetaValue::U64),
        any::<i64>().prop_map(MetaValue::I64),
        (-1e300f64..1e300).prop_map(MetaValue::F64),
        arb_array(2).prop_map(MetaValue::Array),
    ]
}

fn arb_tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>)> {
    let ty = prop::sample::select(vec![GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_K]);
    (ty, prop::collection::vec(1u64..4, 0..3)).prop_map(|(ty, rest)| {
        let mut ne = vec![ty.block_size() * 2];
        ne.extend(rest);
        (ty, ne)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// parse(write(x)) == x for arbitrary metadata and tensor tables.
    #[test]
    fn parse_of_write_is_identity(
        kvs in prop::collection::vec(arb_value(), 0..12),
        tensors in prop::collection::vec(arb_tensor(), 0..5),
        seed in any::<u64>(),
    ) {
        let dir = temp_dir();
        let path = dir.path().join("p.gguf");
        let mut plan = GgufPlan::new();
        for (i, v) in kvs.iter().enumerate() {
            plan.add_kv(&format!("k.{i}"), v.clone()).unwrap();
        }
        for (i, (ty, ne)) in tensors.iter().enumerate() {
            plan.add_tensor(&format!("t.{i}"), *ty, ne).unwrap();
        }
        let expected_size = plan.file_size();
        let mut rng = crate::common::tiny_gguf::Rng::new(seed);
        let data: Vec<Vec<u8>> = plan.tensors().iter().map(|t| rng.bytes(t.n_bytes as usize)).collect();
        let mut w = GgufWriter::create(&path, plan).unwrap();
        for (i, d) in data.iter().enumerate() {
            w.write_tensor(&format!("t.{i}"), d).unwrap();
        }
        w.finish().unwrap();
        prop_assert_eq!(fs::metadata(&path).unwrap().len(), expected_size);
        let file = GgufFile::open(&path).unwrap();
        let g = file.gguf().unwrap();
        prop_assert_eq!(g.metadata.len(), kvs.len());
        for ((_, got), want) in g.metadata.iter().zip(&kvs) {
            prop_assert_eq!(&got.to_owned_value(), want);
        }
        for (i, ((ty, ne), d)) in tensors.iter().zip(&data).enumerate() {
            let t = &g.tensors[i];
            prop_assert_eq!((t.ty, &t.ne), (*ty, ne));
            prop_assert_eq!(g.tensor_data(t), &d[..]);
        }
    }
}
