//! Handcrafted GGUF files, byte by byte, for malformed-file tests. Independent of our writer, so
//! the reader is not only tested against itself.

/// One metadata pair: key bytes (may be invalid UTF-8), value type id, encoded value.
#[derive(Clone, Debug)]
pub struct RawKv {
    pub key: Vec<u8>,
    pub type_id: u32,
    pub value: Vec<u8>,
}

/// One tensor info.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub name: Vec<u8>,
    pub ne: Vec<u64>,
    pub type_id: u32,
    pub offset: u64,
}

/// A whole file; `to_bytes` lays it out with the alignment padding a valid file has.
#[derive(Clone, Debug)]
pub struct RawGguf {
    pub magic: [u8; 4],
    pub version: u32,
    /// Overrides the tensor count written in the header.
    pub tensor_count: Option<u64>,
    /// Overrides the metadata count written in the header.
    pub kv_count: Option<u64>,
    pub kvs: Vec<RawKv>,
    pub tensors: Vec<RawTensor>,
    pub alignment: u64,
    pub data: Vec<u8>,
}

/// Where each section starts in the bytes of a [`RawGguf`].
#[derive(Clone, Debug, Default)]
pub struct Sections {
    pub kvs_start: usize,
    pub tensor_infos_start: usize,
    pub data_start: usize,
    pub end: usize,
}

pub fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

pub fn kv(key: &str, type_id: u32, value: Vec<u8>) -> RawKv {
    RawKv { key: key.as_bytes().to_vec(), type_id, value }
}

pub fn kv_u32(key: &str, v: u32) -> RawKv {
    kv(key, 4, v.to_le_bytes().to_vec())
}

pub fn kv_str(key: &str, v: &str) -> RawKv {
    kv(key, 8, string(v.as_bytes()))
}

/// An array value: element type, count, encoded elements.
pub fn array(elem_type: u32, count: u64, elems: &[u8]) -> Vec<u8> {
    let mut v = elem_type.to_le_bytes().to_vec();
    v.extend_from_slice(&count.to_le_bytes());
    v.extend_from_slice(elems);
    v
}

impl RawGguf {
    /// A small valid file: three metadata pairs and two F32 tensors of 8 and 4 elements.
    pub fn valid() -> RawGguf {
        let data_a: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let mut data = data_a;
        data.resize(32, 0);
        data.extend((0..4).flat_map(|i| (i as f32 * 0.5).to_le_bytes()));
        RawGguf {
            magic: *b"GGUF",
            version: 3,
            tensor_count: None,
            kv_count: None,
            kvs: vec![
                kv_str("general.architecture", "llama"),
                kv_u32("llama.block_count", 2),
                kv("tokenizer.ggml.tokens", 9, array(8, 2, &[string(b"a"), string(b"b")].concat())),
            ],
            tensors: vec![
                RawTensor { name: b"a.weight".to_vec(), ne: vec![8], type_id: 0, offset: 0 },
                RawTensor { name: b"b.weight".to_vec(), ne: vec![2, 2], type_id: 0, offset: 32 },
            ],
            alignment: 32,
            data,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.layout().0
    }

    pub fn layout(&self) -> (Vec<u8>, Sections) {
        let mut s = Sections::default();
        let mut b = Vec::new();
        b.extend_from_slice(&self.magic);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.tensor_count.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        s.kvs_start = b.len();
        for kv in &self.kvs {
            b.extend_from_slice(&string(&kv.key));
            b.extend_from_slice(&kv.type_id.to_le_bytes());
            b.extend_from_slice(&kv.value);
        }
        s.tensor_infos_start = b.len();
        for t in &self.tensors {
            b.extend_from_slice(&string(&t.name));
            b.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.type_id.to_le_bytes());
            b.extend_from_slice(&t.offset.to_le_bytes());
        }
        let padded = b.len().div_ceil(self.alignment as usize) * self.alignment as usize;
        b.resize(padded, 0);
        s.data_start = b.len();
        b.extend_from_slice(&self.data);
        s.end = b.len();
        (b, s)
    }
}
