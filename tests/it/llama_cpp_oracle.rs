//! llama.cpp, through the crate, is the judge of compatibility: it must read what we write and
//! see the same things we do; and our type table must equal ggml's.

use gguftune::ggml::{self, GgufContext, LlamaModel, Runtime};
use gguftune::gguf::{GgmlType, GgufFile};

use crate::common::temp_dir;
use crate::common::tiny_gguf::{write_sample, write_tiny_llama, TinyLlamaGguf};

#[test]
fn type_table_equals_ggml() {
    for ty in GgmlType::all() {
        assert_eq!(ty.block_size(), ggml::block_size(ty), "block size of {ty}");
        assert_eq!(ty.type_size(), ggml::type_size(ty), "type size of {ty}");
    }
}

#[test]
fn gguf_init_from_file_reads_what_we_wrote_as_we_do() {
    let dir = temp_dir();
    let path = dir.path().join("sample.gguf");
    write_sample(&path, 2);
    // gguf.cpp accepts no nested arrays; write_sample has one, so use a file without it as well.
    let ours_path = dir.path().join("tiny.gguf");
    write_tiny_llama(&ours_path, &TinyLlamaGguf::default(), 3);
    for p in [&ours_path] {
        let ctx = GgufContext::open(Runtime::get(), p).unwrap();
        let file = GgufFile::open(p).unwrap();
        let g = file.gguf().unwrap();
        assert_eq!(ctx.version(), g.version);
        assert_eq!(ctx.alignment(), g.alignment);
        assert_eq!(ctx.data_offset(), g.data_offset);
        assert_eq!(ctx.n_kv(), g.metadata.len() as u64);
        for (i, (k, v)) in g.metadata.iter().enumerate() {
            assert_eq!(ctx.key(i as u64).unwrap(), *k);
            assert_eq!(ctx.kv_type(i as u64).unwrap(), v.value_type().id());
        }
        assert_eq!(ctx.n_tensors(), g.tensors.len() as u64);
        for (i, t) in g.tensors.iter().enumerate() {
            let i = i as u64;
            assert_eq!(ctx.tensor_name(i).unwrap(), t.name);
            assert_eq!(ctx.tensor_type(i).unwrap(), t.ty.id());
            assert_eq!(ctx.tensor_offset(i).unwrap(), t.offset);
            assert_eq!(ctx.tensor_size(i).unwrap(), t.n_bytes);
        }
        assert!(ctx.key(g.metadata.len() as u64).is_err(), "out-of-range index is an error, not an abort");
    }
}

#[test]
fn gguf_init_from_file_reads_every_scalar_type_we_write() {
    use gguftune::gguf::{GgufPlan, GgufWriter};
    let dir = temp_dir();
    let path = dir.path().join("flat.gguf");
    let mut plan = GgufPlan::new();
    for (k, v) in crate::common::tiny_gguf::every_value_type() {
        let nested = matches!(&v, gguftune::gguf::MetaValue::Array(gguftune::gguf::MetaArray::Array(_)));
        if !nested {
            plan.add_kv(&k, v).unwrap();
        }
    }
    plan.add_tensor("x", GgmlType::Q8_0, &[32, 2]).unwrap();
    let mut w = GgufWriter::create(&path, plan).unwrap();
    w.write_tensor("x", &[0u8; 68]).unwrap();
    w.finish().unwrap();
    let ctx = GgufContext::open(Runtime::get(), &path).unwrap();
    assert_eq!(ctx.n_kv(), 16);
    assert_eq!(ctx.tensor_size(0).unwrap(), 68);
}

#[test]
fn llama_cpp_refuses_a_corrupt_file_with_its_reason() {
    let dir = temp_dir();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, b"GGUF\x01\x00\x00\x00").unwrap();
    let err = GgufContext::open(Runtime::get(), &path).unwrap_err();
    assert!(err.to_string().contains("bad.gguf"), "{err}");
}

#[test]
fn llama_cpp_loads_a_model_we_wrote() {
    let dir = temp_dir();
    let path = dir.path().join("tiny.gguf");
    let h = TinyLlamaGguf::default();
    write_tiny_llama(&path, &h, 4);
    let model = LlamaModel::load(Runtime::get(), &path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let ours: u64 = file.gguf().unwrap().tensors.iter().map(|t| t.n_elements()).sum();
    assert_eq!(model.n_params(), ours);
    assert!(model.desc().starts_with("llama"), "{}", model.desc());
    assert_eq!(model.meta_val_str("general.name").as_deref(), Some("tiny"));
    assert_eq!(model.meta_val_str("no.such.key"), None);
}
