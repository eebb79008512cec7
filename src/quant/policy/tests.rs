//! Type choices checked against llama-quant.cpp's rules, on real model shapes.
//! Expected types are derived by hand from llama-quant.cpp / conversion/base.py (the layer lists
//! are written out, not recomputed with `use_more_bits`), so a slip in the port shows up here.
use std::collections::HashMap;

use super::*;
use GgmlType as T;

/// A Llama-family tensor list in convert order: `(name, ne)`.
struct Model {
    arch: &'static str,
    hp: QuantHParams,
    tensors: Vec<(String, Vec<u64>)>,
}

impl Model {
    /// Dense Llama/Qwen2 shapes. `bias`: qwen2's q/k/v biases.
    fn dense(arch: &'static str, hp: QuantHParams, hidden: u64, ff: u64, vocab: u64, tied: bool, bias: bool) -> Model {
        let kv = hidden / u64::from(hp.n_head) * u64::from(hp.n_head_kv);
        let mut t: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![hidden, vocab])];
        for i in 0..hp.n_layer {
            let mut add = |n: &str, ne: Vec<u64>| t.push((format!("blk.{i}.{n}"), ne));
            add("attn_norm.weight", vec![hidden]);
            add("attn_q.weight", vec![hidden, hidden]);
            add("attn_k.weight", vec![hidden, kv]);
            add("attn_v.weight", vec![hidden, kv]);
            if bias {
                add("attn_q.bias", vec![hidden]);
                add("attn_k.bias", vec![kv]);
                add("attn_v.bias", vec![kv]);
            }
            add("attn_output.weight", vec![hidden, hidden]);
            add("ffn_norm.weight", vec![hidden]);
            add("ffn_gate.weight", vec![hidden, ff]);
            add("ffn_up.weight", vec![hidden, ff]);
            add("ffn_down.weight", vec![ff, hidden]);
        }
        t.push(("output_norm.weight".into(), vec![hidden]));
        if !tied {
            t.push(("output.weight".into(), vec![hidden, vocab]));
        }
        Model { arch, hp, tensors: t }
    }

    fn llama_7b(tied: bool) -> Model {
        let hp = QuantHParams { n_layer: 32, n_expert: 0, n_head: 32, n_head_kv: 32 };
        Model::dense("llama", hp, 4096, 11008, 32000, tied, false)
    }

    /// SmolLM-135M: hidden 576 is not a multiple of 256.
    fn smollm_135m() -> Model {
        let hp = QuantHParams { n_layer: 30, n_expert: 0, n_head: 9, n_head_kv: 3 };
        Model::dense("llama", hp, 576, 1536, 49152, true, false)
    }

    fn ctx(&self) -> TensorContext {
        TensorContext::from_tensor_names(self.arch, self.hp, self.tensors.iter().map(|t| t.0.as_str()))
    }

    fn plan(&self, ftype: FileType) -> HashMap<String, GgmlType> {
        let refs: Vec<(&str, &[u64])> = self.tensors.iter().map(|(n, ne)| (n.as_str(), ne.as_slice())).collect();
        let types = plan_types(&self.ctx(), ftype, &refs).expect("plan");
        self.tensors.iter().map(|t| t.0.clone()).zip(types).collect()
    }
}

fn layer_types(plan: &HashMap<String, GgmlType>, n_layer: u32, suffix: &str) -> Vec<GgmlType> {
    (0..n_layer).map(|i| plan[&format!("blk.{i}.{suffix}")]).collect()
}

/// `hi` for the layers listed, `lo` for the others.
fn by_layer(n_layer: u32, listed: &[u32], hi: GgmlType, lo: GgmlType) -> Vec<GgmlType> {
    (0..n_layer).map(|i| if listed.contains(&i) { hi } else { lo }).collect()
}

/// use_more_bits for 32 layers: i < 4, i >= 28, (i - 4) % 3 == 2.
const MORE_BITS_32: &[u32] = &[0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31];
/// use_more_bits for 30 layers: i < 3, i >= 26 (7*30/8), (i - 3) % 3 == 2.
const MORE_BITS_30: &[u32] = &[0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29];

#[test]
fn file_type_ids_names_and_defaults() {
    // (file type, include/llama.h id, llama_ftype_get_default_type)
    let expected = [
        (FileType::F32, 0, T::F32),
        (FileType::F16, 1, T::F16),
        (FileType::Q4_0, 2, T::Q4_0),
        (FileType::Q4_1, 3, T::Q4_1),
        (FileType::Q8_0, 7, T::Q8_0),
        (FileType::Q5_0, 8, T::Q5_0),
        (FileType::Q5_1, 9, T::Q5_1),
        (FileType::Q2_K, 10, T::Q2_K),
        (FileType::Q3_K_S, 11, T::Q3_K),
        (FileType::Q3_K_M, 12, T::Q3_K),
        (FileType::Q3_K_L, 13, T::Q3_K),
        (FileType::Q4_K_S, 14, T::Q4_K),
        (FileType::Q4_K_M, 15, T::Q4_K),
        (FileType::Q5_K_S, 16, T::Q5_K),
        (FileType::Q5_K_M, 17, T::Q5_K),
        (FileType::Q6_K, 18, T::Q6_K),
        (FileType::BF16, 32, T::BF16),
    ];
    assert_eq!(FileType::all().len(), expected.len());
    for (ft, id, ty) in expected {
        assert!(FileType::all().contains(&ft));
        assert_eq!(ft.llama_ftype(), id, "{ft}");
        assert_eq!(FileType::from_llama_ftype(id), Some(ft));
        assert_eq!(ft.default_type(), ty, "{ft}");
        assert_eq!(FileType::from_name(ft.name()), Some(ft));
        assert_eq!(FileType::from_name(&ft.name().to_uppercase()), Some(ft));
        assert_eq!(ft.name(), ft.name().to_lowercase());
    }
    assert_eq!(FileType::from_name("Q4_K"), Some(FileType::Q4_K_M));
    assert_eq!(FileType::from_name("q5_k"), Some(FileType::Q5_K_M));
    assert_eq!(FileType::from_name("q3_k"), Some(FileType::Q3_K_M));
    assert_eq!(FileType::from_name("iq2_xxs"), None);
    assert!(matches!("q9".parse::<FileType>(), Err(PolicyError::UnknownFileType { name }) if name == "q9"));
    assert_eq!("Q8_0".parse::<FileType>(), Ok(FileType::Q8_0));
}

#[test]
fn context_counts() {
    let untied = Model::llama_7b(false).ctx();
    assert_eq!((untied.n_attention_wv, untied.n_ffn_down, untied.has_output), (32, 32, true));
    let tied = Model::llama_7b(true).ctx();
    assert!(tied.has_tied_embeddings());
    assert_eq!(Model::smollm_135m().ctx().n_gqa(), 3);
}

#[test]
fn llama_7b_q4_k_m() {
    let plan = Model::llama_7b(false).plan(FileType::Q4_K_M);
    assert_eq!(plan["token_embd.weight"], T::Q4_K, "untied token_embd keeps the default type");
    assert_eq!(plan["output.weight"], T::Q6_K);
    assert_eq!(plan["output_norm.weight"], T::F32);
    assert_eq!(layer_types(&plan, 32, "attn_v.weight"), by_layer(32, MORE_BITS_32, T::Q6_K, T::Q4_K));
    assert_eq!(layer_types(&plan, 32, "ffn_down.weight"), by_layer(32, MORE_BITS_32, T::Q6_K, T::Q4_K));
    for s in ["attn_q.weight", "attn_k.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight"] {
        assert_eq!(layer_types(&plan, 32, s), vec![T::Q4_K; 32], "{s}");
    }
    for s in ["attn_norm.weight", "ffn_norm.weight"] {
        assert_eq!(layer_types(&plan, 32, s), vec![T::F32; 32], "{s}");
    }
}

#[test]
fn llama_7b_q5_k_m_q6_k_q8_0_q4_0() {
    let m = Model::llama_7b(false);
    // (file type, token_embd, output, attn_v/ffn_down in more-bits layers, elsewhere, other 2-D)
    let cases = [
        (FileType::Q5_K_M, T::Q5_K, T::Q6_K, T::Q6_K, T::Q5_K, T::Q5_K),
        (FileType::Q6_K, T::Q6_K, T::Q6_K, T::Q6_K, T::Q6_K, T::Q6_K),
        (FileType::Q8_0, T::Q8_0, T::Q8_0, T::Q8_0, T::Q8_0, T::Q8_0),
        (FileType::Q4_0, T::Q4_0, T::Q6_K, T::Q4_0, T::Q4_0, T::Q4_0),
        (FileType::Q5_K_S, T::Q5_K, T::Q6_K, T::Q5_K, T::Q5_K, T::Q5_K),
    ];
    for (ft, embd, out, hi, lo, rest) in cases {
        let plan = m.plan(ft);
        assert_eq!(plan["token_embd.weight"], embd, "{ft}");
        assert_eq!(plan["output.weight"], out, "{ft}");
        assert_eq!(layer_types(&plan, 32, "attn_v.weight"), by_layer(32, MORE_BITS_32, hi, lo), "{ft}");
        assert_eq!(layer_types(&plan, 32, "ffn_down.weight"), by_layer(32, MORE_BITS_32, hi, lo), "{ft}");
        assert_eq!(layer_types(&plan, 32, "attn_q.weight"), vec![rest; 32], "{ft}");
        assert_eq!(layer_types(&plan, 32, "ffn_norm.weight"), vec![T::F32; 32], "{ft}");
    }
}

#[test]
fn k_quant_s_and_3_bit_mixtures() {
    let m = Model::llama_7b(false);
    let plan = m.plan(FileType::Q4_K_S);
    assert_eq!(layer_types(&plan, 32, "attn_v.weight"), by_layer(32, &[0, 1, 2, 3], T::Q5_K, T::Q4_K));
    assert_eq!(layer_types(&plan, 32, "ffn_down.weight"), by_layer(32, &[0, 1, 2, 3], T::Q5_K, T::Q4_K));
    assert_eq!(plan["output.weight"], T::Q6_K);

    let plan = m.plan(FileType::Q3_K_M);
    assert_eq!(layer_types(&plan, 32, "attn_v.weight"), by_layer(32, &[0, 1], T::Q5_K, T::Q4_K));
    // i < 32/16 gets Q5_K; every other layer Q4_K (not Falcon, so use_more_bits is not consulted).
    assert_eq!(layer_types(&plan, 32, "ffn_down.weight"), by_layer(32, &[0, 1], T::Q5_K, T::Q4_K));
    assert_eq!(layer_types(&plan, 32, "attn_output.weight"), vec![T::Q4_K; 32]);
    assert_eq!(layer_types(&plan, 32, "attn_q.weight"), vec![T::Q3_K; 32]);

    let plan = m.plan(FileType::Q3_K_L);
    assert_eq!(layer_types(&plan, 32, "attn_v.weight"), vec![T::Q5_K; 32]);
    assert_eq!(layer_types(&plan, 32, "ffn_down.weight"), vec![T::Q5_K; 32]);
    assert_eq!(layer_types(&plan, 32, "attn_output.weight"), vec![T::Q5_K; 32]);

    let plan = m.plan(FileType::Q3_K_S);
    assert_eq!(layer_types(&plan, 32, "attn_v.weight"), vec![T::Q3_K; 32]);
    assert_eq!(layer_types(&plan, 32, "ffn_down.weight"), vec![T::Q3_K; 32]);

    // Q2_K: attn_v reads n_gqa (1 here, so Q3_K); ffn_down and attn_output Q3_K.
    let plan = m.plan(FileType::Q2_K);
    assert_eq!(layer_types(&plan, 32, "attn_v.weight"), vec![T::Q3_K; 32]);
    assert_eq!(layer_types(&plan, 32, "ffn_down.weight"), vec![T::Q3_K; 32]);
    assert_eq!(layer_types(&plan, 32, "attn_output.weight"), vec![T::Q3_K; 32]);
    assert_eq!(layer_types(&plan, 32, "ffn_up.weight"), vec![T::Q2_K; 32]);
    assert_eq!(plan["output.weight"], T::Q6_K);
    // Llama-3-8B-like GQA (32 / 8 = 4): attn_v Q4_K.
    let hp = QuantHParams { n_layer: 32, n_expert: 0, n_head: 32, n_head_kv: 8 };
    let plan = Model::dense("llama", hp, 4096, 14336, 128256, false, false).plan(FileType::Q2_K);
    assert_eq!(layer_types(&plan, 32, "attn_v.weight"), vec![T::Q4_K; 32]);
}

#[test]
fn tied_embeddings_take_the_output_rule() {
    let m = Model::llama_7b(true);
    for (ft, embd) in [
        (FileType::Q4_K_M, T::Q6_K),
        (FileType::Q4_0, T::Q6_K),
        (FileType::Q5_K_M, T::Q6_K),
        (FileType::Q8_0, T::Q8_0),
        (FileType::F16, T::F16),
    ] {
        assert_eq!(m.plan(ft)["token_embd.weight"], embd, "{ft}");
    }
}

#[test]
fn smollm_rows_of_576_fall_back() {
    let m = Model::smollm_135m();
    let plan = m.plan(FileType::Q4_K_M);
    // Tied, and 576 % 256 != 0: the output rule picks Q8_0 (576 % 32 == 0, so it stays).
    assert_eq!(plan["token_embd.weight"], T::Q8_0);
    // Q6_K → Q8_0 and Q4_K → Q5_0 where ne[0] = 576.
    assert_eq!(layer_types(&plan, 30, "attn_v.weight"), by_layer(30, MORE_BITS_30, T::Q8_0, T::Q5_0));
    for s in ["attn_q.weight", "attn_k.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight"] {
        assert_eq!(layer_types(&plan, 30, s), vec![T::Q5_0; 30], "{s}");
    }
    // ffn_down rows are 1536 = 6 × 256 long: no fallback.
    assert_eq!(layer_types(&plan, 30, "ffn_down.weight"), by_layer(30, MORE_BITS_30, T::Q6_K, T::Q4_K));

    // Q4_0: the output rule gives Q6_K (576 % 32 == 0), whose fallback is Q8_0.
    assert_eq!(m.plan(FileType::Q4_0)["token_embd.weight"], T::Q8_0);
    assert_eq!(m.plan(FileType::Q4_0)["blk.0.attn_q.weight"], T::Q4_0);
    // Q5_K_M: Q5_K → Q5_1.
    assert_eq!(m.plan(FileType::Q5_K_M)["blk.3.attn_q.weight"], T::Q5_1);
    // Q2_K: n_gqa = 3 → attn_v Q3_K → Q4_0; ffn_up Q2_K → Q4_0.
    assert_eq!(m.plan(FileType::Q2_K)["blk.0.attn_v.weight"], T::Q4_0);
    assert_eq!(m.plan(FileType::Q2_K)["blk.0.ffn_up.weight"], T::Q4_0);

    // Six 576-wide tensors per layer need a fallback (llama-quantize's n_fallback).
    let names: Vec<&str> = m.tensors.iter().map(|t| t.0.as_str()).collect();
    let mut chooser = TypeChooser::new(FileType::Q4_K_M, m.arch, 30, names.iter().copied()).with_heads(9, 3);
    for (name, ne) in &m.tensors {
        chooser.choose(name, ne);
    }
    assert_eq!(chooser.n_fallback(), 6 * 30);
    // Fed in convert order (layers increasing), the chooser agrees with plan_types.
    let mut chooser = TypeChooser::new(FileType::Q4_K_M, m.arch, 30, names.iter().copied());
    for (name, ne) in &m.tensors {
        assert_eq!(chooser.choose(name, ne), plan[name], "{name}");
    }
}

#[test]
fn rows_not_a_multiple_of_32_become_f16() {
    let ctx = Model::llama_7b(false).ctx();
    for ft in [FileType::Q4_K_M, FileType::Q8_0, FileType::Q4_0, FileType::Q6_K] {
        let mut state = QuantState::new(ctx.clone(), ft);
        assert_eq!(state.choose("blk.0.attn_q.weight", &[100, 64], T::F16), Ok(T::F16), "{ft}");
        assert_eq!(state.n_fallback(), 1);
        // Output: 100 % block != 0 → Q8_0 → F16 as well.
        assert_eq!(state.choose("output.weight", &[100, 64], T::F16), Ok(T::F16), "{ft}");
    }
}

#[test]
fn qwen2_0_5b_q4_k_m() {
    // Qwen2-0.5B: 24 layers, hidden 896 (896 % 256 = 128), 14 heads / 2 KV heads, tied, q/k/v biases.
    let hp = QuantHParams { n_layer: 24, n_expert: 0, n_head: 14, n_head_kv: 2 };
    let plan = Model::dense("qwen2", hp, 896, 4864, 151936, true, true).plan(FileType::Q4_K_M);
    assert_eq!(plan["token_embd.weight"], T::Q8_0);
    assert_eq!(plan["blk.5.attn_q.bias"], T::F32);
    assert_eq!(plan["blk.5.attn_q.weight"], T::Q5_0);
    // use_more_bits for 24 layers: i < 3, i >= 21, (i - 3) % 3 == 2.
    let more_bits: &[u32] = &[0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23];
    assert_eq!(layer_types(&plan, 24, "attn_v.weight"), by_layer(24, more_bits, T::Q8_0, T::Q5_0));
    // ffn_down rows: 4864 = 19 × 256.
    assert_eq!(layer_types(&plan, 24, "ffn_down.weight"), by_layer(24, more_bits, T::Q6_K, T::Q4_K));
}

#[test]
fn seventy_b_attn_v_gets_q5_k() {
    let hp = QuantHParams { n_layer: 80, n_expert: 0, n_head: 64, n_head_kv: 8 };
    let m = Model::dense("llama", hp, 8192, 28672, 128256, false, false);
    assert!(m.ctx().is_70b());
    let plan = m.plan(FileType::Q4_K_M);
    // use_more_bits for 80 layers: i < 10, i >= 70, and 12, 15, ..., 69 ((i - 10) % 3 == 2).
    let more: Vec<u32> = (0..10).chain((12..70).step_by(3)).chain(70..80).collect();
    assert_eq!(layer_types(&plan, 80, "attn_v.weight"), by_layer(80, &more, T::Q6_K, T::Q5_K));
    assert_eq!(layer_types(&plan, 80, "ffn_down.weight"), by_layer(80, &more, T::Q6_K, T::Q4_K));
    assert_eq!(m.plan(FileType::Q3_K_M)["blk.40.attn_v.weight"], T::Q5_K);

    // n_head == n_head_kv: LLM_TYPE_65B, no bump.
    let hp = QuantHParams { n_layer: 80, n_expert: 0, n_head: 64, n_head_kv: 64 };
    let m = Model::dense("llama", hp, 8192, 22016, 32000, false, false);
    assert!(!m.ctx().is_70b());
    assert_eq!(m.plan(FileType::Q4_K_M)["blk.40.attn_v.weight"], T::Q4_K);
}

fn mixtral() -> Model {
    let hp = QuantHParams { n_layer: 32, n_expert: 8, n_head: 32, n_head_kv: 8 };
    let mut m = Model::dense("llama", hp, 4096, 14336, 32000, false, false);
    m.tensors.retain(|t| !t.0.contains("ffn_gate.") && !t.0.contains("ffn_up.") && !t.0.contains("ffn_down."));
    for i in 0..32 {
        m.tensors.push((format!("blk.{i}.ffn_gate_inp.weight"), vec![4096, 8]));
        m.tensors.push((format!("blk.{i}.ffn_gate_exps.weight"), vec![4096, 14336, 8]));
        m.tensors.push((format!("blk.{i}.ffn_up_exps.weight"), vec![4096, 14336, 8]));
        m.tensors.push((format!("blk.{i}.ffn_down_exps.weight"), vec![14336, 4096, 8]));
    }
    m
}

#[test]
fn mixtral_8_experts() {
    let m = mixtral();
    let plan = m.plan(FileType::Q4_K_M);
    assert_eq!(layer_types(&plan, 32, "attn_v.weight"), vec![T::Q8_0; 32]);
    assert_eq!(layer_types(&plan, 32, "attn_k.weight"), vec![T::Q8_0; 32]);
    assert_eq!(layer_types(&plan, 32, "attn_output.weight"), vec![T::Q5_K; 32]);
    assert_eq!(layer_types(&plan, 32, "attn_q.weight"), vec![T::Q4_K; 32]);
    assert_eq!(layer_types(&plan, 32, "ffn_gate_inp.weight"), vec![T::F32; 32]);
    assert_eq!(layer_types(&plan, 32, "ffn_up_exps.weight"), vec![T::Q4_K; 32]);
    assert_eq!(layer_types(&plan, 32, "ffn_down_exps.weight"), by_layer(32, MORE_BITS_32, T::Q6_K, T::Q4_K));
    // F16: ffn_gate_inp stays F32 in convert_hf_to_gguf too.
    assert_eq!(m.plan(FileType::F16)["blk.0.ffn_gate_inp.weight"], T::F32);

    // With experts, the layer comes from the name, not from a counter.
    let mut state = QuantState::new(m.ctx(), FileType::Q4_K_M);
    assert_eq!(state.choose("blk.5.ffn_down_exps.weight", &[14336, 4096, 8], T::F16), Ok(T::Q4_K));
    assert_eq!(state.choose("blk.6.ffn_down_exps.weight", &[14336, 4096, 8], T::F16), Ok(T::Q6_K));
    assert!(matches!(
        state.choose("ffn_down_exps.weight", &[14336, 4096, 8], T::F16),
        Err(PolicyError::NoLayer { tensor }) if tensor == "ffn_down_exps.weight"
    ));
    assert!(matches!(
        state.choose("blk.32.ffn_up_exps.weight", &[4096, 14336, 8], T::F16),
        Err(PolicyError::LayerOutOfRange { layer: 32, n_layer: 32, .. })
    ));
}

#[test]
fn float_file_types_mirror_convert_hf_to_gguf() {
    let hp = QuantHParams { n_layer: 2, n_expert: 0, n_head: 14, n_head_kv: 2 };
    let m = Model::dense("qwen2", hp, 896, 4864, 151936, false, true);
    for (ft, ty) in [(FileType::F16, T::F16), (FileType::BF16, T::BF16), (FileType::F32, T::F32)] {
        let plan = m.plan(ft);
        for (name, ne) in &m.tensors {
            let expected = if ne.len() == 1 { T::F32 } else { ty };
            assert_eq!(plan[name], expected, "{ft} {name}");
        }
    }
    assert_eq!(convert_type("blk.0.attn_k.bias", &[128], FileType::F16), Ok(T::F32));
    assert_eq!(convert_type("blk.0.attn_q.lora_a", &[896, 8], FileType::BF16), Ok(T::BF16));
    assert_eq!(convert_type("blk.0.attn_q.scale", &[896, 8], FileType::BF16), Ok(T::F32));
    assert_eq!(convert_type("blk.0.ffn_gate_inp_shexp.weight", &[896, 1], FileType::F16), Ok(T::F32));
    assert_eq!(convert_type("position_embd.weight", &[896, 512], FileType::F16), Ok(T::F32));
    // A 2-D norm is F32 by name; a [n, 1] tensor still counts two dimensions for PyTorch.
    assert_eq!(convert_type("blk.0.attn_q_norm.weight", &[64, 2], FileType::F16), Ok(T::F32));
    assert_eq!(convert_type("blk.0.attn_q.weight", &[896, 1], FileType::F16), Ok(T::F16));
    assert_eq!(
        convert_type("x.weight", &[32, 32], FileType::Q8_0),
        Err(PolicyError::NotAFloatType { ftype: FileType::Q8_0 })
    );
}

#[test]
fn llama_quantize_with_a_float_file_type_keeps_unquantizable_tensors() {
    let mut state = QuantState::new(mixtral().ctx(), FileType::F16);
    assert_eq!(state.choose("blk.0.attn_q.weight", &[4096, 4096], T::BF16), Ok(T::F16));
    assert_eq!(state.choose("output.weight", &[4096, 32000], T::F32), Ok(T::F16));
    assert_eq!(state.choose("blk.0.attn_norm.weight", &[4096], T::F32), Ok(T::F32));
    assert_eq!(state.choose("blk.0.ffn_gate_inp.weight", &[4096, 8], T::BF16), Ok(T::BF16));
    // ggml_n_dims ignores trailing 1s: [4096, 1] is 1-D, so not quantized.
    assert_eq!(state.choose("blk.0.attn_q.weight", &[4096, 1], T::BF16), Ok(T::BF16));
}

#[test]
fn which_tensors_llama_quantize_touches() {
    assert!(allows_quantization("llama", "blk.0.attn_q.weight", &[64, 64]));
    assert!(!allows_quantization("llama", "blk.0.attn_q.bias", &[64, 64]));
    assert!(!allows_quantization("llama", "blk.0.attn_norm.weight", &[64, 64]));
    assert!(!allows_quantization("llama", "blk.0.attn_q.weight", &[64]));
    assert!(!allows_quantization("llama", "blk.0.ffn_gate_inp.weight", &[64, 8]));
    assert!(!allows_quantization("bert", "token_types.weight", &[64, 2]));
    assert!(!allows_quantization("glm5-next", "blk.0.hc_x.weight", &[64, 64]));
    assert!(allows_quantization("llama", "blk.0.hc_x.weight", &[64, 64]));
    // The size_t wrap-around in `rfind("weight") == size() - 6`.
    assert!(allows_quantization("llama", "abcde", &[64, 64]));
    assert!(!allows_quantization("llama", "abcd", &[64, 64]));
}

#[test]
fn order_is_the_loaders_weights_map() {
    let names =
        ["blk.10.attn_v.weight", "token_embd.weight", "blk.2.attn_v.weight", "output.weight", "blk.2.attn_k.weight"];
    let order: Vec<&str> = llama_quantize_order(&names).into_iter().map(|i| names[i]).collect();
    assert_eq!(
        order,
        ["output.weight", "token_embd.weight", "blk.2.attn_k.weight", "blk.2.attn_v.weight", "blk.10.attn_v.weight"]
    );
    assert_eq!(blk_layer("blk.12.attn_v.weight"), Some(12));
    assert_eq!(blk_layer("blk.x.attn_v.weight"), None);
    assert_eq!(blk_layer("output.weight"), None);

    // plan_types does not depend on the order it is given.
    let m = Model::llama_7b(false);
    let mut reversed = Model::llama_7b(false);
    reversed.tensors.reverse();
    assert_eq!(m.plan(FileType::Q4_K_M), reversed.plan(FileType::Q4_K_M));
}
