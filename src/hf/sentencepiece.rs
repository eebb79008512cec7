//! SentencePiece `tokenizer.model` files as GGUF tokenizer metadata.
//!
//! A `tokenizer.model` is a serialized protobuf `ModelProto` (sentencepiece's
//! `src/sentencepiece_model.proto`). [`parse_model_proto`] reads the fields llama.cpp needs from
//! `&[u8]` with a hand-written, bounded protobuf reader: every length is checked against the
//! bytes that remain, messages nest only as the schema does (no recursion), and nothing is
//! allocated beyond the strings it returns, which the file's own bytes bound. Field numbers and
//! defaults, checked against sentencepiece 0.2.3's `sentencepiece_model_pb2.py`:
//!
//! | message | field | number | type | default |
//! |---|---|---|---|---|
//! | `ModelProto` | `pieces` | 1 | repeated `SentencePiece` | |
//! | | `trainer_spec` | 2 | `TrainerSpec` | |
//! | | `normalizer_spec` | 3 | `NormalizerSpec` | |
//! | `SentencePiece` | `piece` | 1 | string | `""` |
//! | | `score` | 2 | float | 0 |
//! | | `type` | 3 | enum: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6 | NORMAL |
//! | `TrainerSpec` | `model_type` | 3 | enum: UNIGRAM 1, BPE 2, WORD 3, CHAR 4 | UNIGRAM |
//! | | `treat_whitespace_as_suffix` | 24 | bool | false |
//! | | `byte_fallback` | 35 | bool | false |
//! | | `unk_id`, `bos_id`, `eos_id`, `pad_id` | 40, 41, 42, 43 | int32 | 0, 1, 2, -1 |
//! | `NormalizerSpec` | `name` | 1 | string | `""` |
//! | | `precompiled_charsmap` | 2 | bytes | empty |
//! | | `add_dummy_prefix` | 3 | bool | true |
//! | | `remove_extra_whitespaces` | 4 | bool | true |
//! | | `escape_whitespaces` | 5 | bool | true |
//!
//! Other fields are skipped by wire type. [`load`] then lays the pieces out as
//! convert_hf_to_gguf.py's `_create_vocab_sentencepiece` does (tokens = pieces, scores from the
//! file, token types from the piece types, `added_tokens.json` and `tokenizer_config.json`'s
//! `added_tokens_decoder` on top, `[PAD{id}]` up to `vocab_size`), and refuses what llama.cpp's
//! `llama` tokenizer cannot reproduce: a model type other than BPE (llama.cpp's SentencePiece
//! tokenizer merges the best-scoring pair, which is SentencePiece's BPE; convert_hf_to_gguf.py's
//! T5 converter sends BPE models there and UNIGRAM ones to the `t5` tokenizer, and asserts on
//! anything else), no byte fallback, normalization rules, removal of extra whitespace, unescaped
//! whitespace and whitespace as a suffix: llama.cpp's `llama` tokenizer has none of those.
//!
//! One difference from convert_hf_to_gguf.py, on purpose: pieces of type USER_DEFINED become
//! user-defined tokens (with `▁` written as a space, as the converter does for added tokens), which
//! llama.cpp matches in the raw text as SentencePiece matches them in the normalized text; the
//! converter types them NORMAL, which llama.cpp never produces, since no merge leads to them.
//! Neither is exact: llama.cpp puts its space prefix at the start of every stretch of text after
//! a user-defined token and none before one that starts the text, where SentencePiece puts one
//! `▁` at the start of the whole text (`"call <tool> now"`: llama.cpp `▁▁` `n`..., SentencePiece
//! `▁n`...). With three user-defined symbols in the fixture's training, 6 of 7 test strings
//! differed in this way only; typed NORMAL, all 7 differed and the symbols were never produced.
//! Llama 1/2 and Mistral v0.1 have no user-defined pieces.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::tokenizer::{
    byte_token, finish, lay_out_vocab, AddedToken, BaseToken, ConfigFiles, FileSpecials, Json, Origin, SpecialIds,
    TokenizerModel, Vocabulary, MAX_TOKEN_ID,
};
use super::{token_type, GgufTokenizer, HfError};

/// The SentencePiece model file.
pub const SPM_FILE: &str = "tokenizer.model";
/// Tokens added to a SentencePiece vocabulary by older checkpoints (`{"text": id}`).
pub const ADDED_TOKENS_FILE: &str = "added_tokens.json";

/// The largest `tokenizer.model` read (real ones are at most a few MB: Gemma 3's 262k pieces
/// take 4.7 MB).
pub const MAX_MODEL_FILE_BYTES: u64 = 64 << 20;
/// Pieces beyond this are refused (the same bound as token ids in tokenizer.json).
pub const MAX_PIECES: usize = 1 << 22;
const _: () = assert!(MAX_PIECES as u64 == MAX_TOKEN_ID as u64);

/// Score convert_hf_to_gguf.py gives added tokens.
const ADDED_TOKEN_SCORE: f32 = -1000.0;
/// Score convert_hf_to_gguf.py gives `[PAD{id}]` padding tokens.
const PADDING_SCORE: f32 = -10000.0;

// ----- The model, as far as llama.cpp needs it ------------------------------------------------

/// `ModelProto`: the fields llama.cpp needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelProto {
    /// `pieces`, by id.
    pub pieces: Vec<Piece>,
    /// `trainer_spec` (defaults when absent).
    pub trainer_spec: TrainerSpec,
    /// `normalizer_spec` (defaults when absent).
    pub normalizer_spec: NormalizerSpec,
}

/// `ModelProto.SentencePiece`.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// `piece`: the text, with spaces as `▁`.
    pub piece: String,
    /// `score`: for BPE models, minus the merge rank.
    pub score: f32,
    /// `type`.
    pub kind: PieceType,
}

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(value: i64) -> Option<PieceType> {
        Some(match value {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }

    /// The `tokenizer.ggml.token_type` value (the enums agree number for number).
    pub fn token_type(self) -> i32 {
        match self {
            PieceType::Normal => token_type::NORMAL,
            PieceType::Unknown => token_type::UNKNOWN,
            PieceType::Control => token_type::CONTROL,
            PieceType::UserDefined => token_type::USER_DEFINED,
            PieceType::Unused => token_type::UNUSED,
            PieceType::Byte => token_type::BYTE,
        }
    }
}

/// `TrainerSpec.ModelType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpmModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

impl SpmModelType {
    fn from_proto(value: i64) -> Option<SpmModelType> {
        Some(match value {
            1 => SpmModelType::Unigram,
            2 => SpmModelType::Bpe,
            3 => SpmModelType::Word,
            4 => SpmModelType::Char,
            _ => return None,
        })
    }

    /// The name in sentencepiece_model.proto.
    pub fn name(self) -> &'static str {
        match self {
            SpmModelType::Unigram => "UNIGRAM",
            SpmModelType::Bpe => "BPE",
            SpmModelType::Word => "WORD",
            SpmModelType::Char => "CHAR",
        }
    }
}

/// `TrainerSpec`: the fields that matter for encoding.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerSpec {
    /// `model_type` (3).
    pub model_type: SpmModelType,
    /// `treat_whitespace_as_suffix` (24).
    pub treat_whitespace_as_suffix: bool,
    /// `byte_fallback` (35).
    pub byte_fallback: bool,
    /// `unk_id` (40).
    pub unk_id: i32,
    /// `bos_id` (41); -1 when the model has none.
    pub bos_id: i32,
    /// `eos_id` (42); -1 when the model has none.
    pub eos_id: i32,
    /// `pad_id` (43); -1 when the model has none.
    pub pad_id: i32,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        TrainerSpec {
            model_type: SpmModelType::Unigram,
            treat_whitespace_as_suffix: false,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
        }
    }
}

/// `NormalizerSpec`.
#[derive(Clone, Debug, PartialEq)]
pub struct NormalizerSpec {
    /// `name` (1): the normalization rule set, `identity` for none.
    pub name: String,
    /// Length of `precompiled_charsmap` (2): the compiled rules (empty for `identity`).
    pub precompiled_charsmap_len: usize,
    /// `add_dummy_prefix` (3): a `▁` is put before the text.
    pub add_dummy_prefix: bool,
    /// `remove_extra_whitespaces` (4): leading, trailing and repeated spaces are dropped.
    pub remove_extra_whitespaces: bool,
    /// `escape_whitespaces` (5): spaces become `▁`.
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec {
            name: String::new(),
            precompiled_charsmap_len: 0,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

// ----- Errors ---------------------------------------------------------------------------------

/// Which message an error is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpmMessage {
    /// `ModelProto` itself.
    Model,
    /// `pieces[index]`.
    Piece { index: usize },
    /// `trainer_spec`.
    TrainerSpec,
    /// `normalizer_spec`.
    NormalizerSpec,
}

/// Which part of a message an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpmMember {
    /// The tag (field number and wire type) of the next field.
    Tag,
    /// A field that is decoded.
    Field(&'static str),
    /// A field that is skipped, by number.
    Unknown(u32),
}

/// Where in the `ModelProto` an error is: a message and a part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpmField {
    pub message: SpmMessage,
    pub member: SpmMember,
}

impl fmt::Display for SpmField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.message {
            SpmMessage::Model => String::new(),
            SpmMessage::Piece { index } => format!("pieces[{index}]"),
            SpmMessage::TrainerSpec => "trainer_spec".to_owned(),
            SpmMessage::NormalizerSpec => "normalizer_spec".to_owned(),
        };
        let dot = if prefix.is_empty() { "" } else { "." };
        match self.member {
            SpmMember::Tag if prefix.is_empty() => write!(f, "field tag"),
            SpmMember::Tag => write!(f, "{prefix}: field tag"),
            SpmMember::Field(name) => write!(f, "{prefix}{dot}{name}"),
            SpmMember::Unknown(number) => write!(f, "{prefix}{dot}(field {number})"),
        }
    }
}

/// The protobuf wire types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    LengthDelimited,
    Fixed32,
}

impl WireType {
    fn from_tag(bits: u64) -> Option<WireType> {
        Some(match bits {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::LengthDelimited,
            5 => WireType::Fixed32,
            _ => return None,
        })
    }
}

impl fmt::Display for WireType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireType::Varint => "wire type 0 (varint)",
            WireType::Fixed64 => "wire type 1 (64-bit)",
            WireType::LengthDelimited => "wire type 2 (length-delimited)",
            WireType::Fixed32 => "wire type 5 (32-bit)",
        })
    }
}

/// What was wrong, with what was expected and what was found.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpmErrorKind {
    #[error("expected {expected}, found the end of the {scope} ({available} bytes left)")]
    Truncated { expected: &'static str, scope: &'static str, available: usize },
    #[error("expected a length of at most the {available} bytes left in the {scope}, found {len}")]
    LengthPastEnd { len: u64, available: usize, scope: &'static str },
    #[error("expected a varint of at most 10 bytes holding 64 bits, found a longer one")]
    VarintTooLong,
    #[error("expected a field number from 1 to 536870911, found {number}")]
    BadFieldNumber { number: u64 },
    #[error("expected wire type 0, 1, 2 or 5, found {found} (groups are not used by SentencePiece)")]
    UnsupportedWireType { found: u8 },
    #[error("expected {expected}, found {found}")]
    WrongWireType { expected: WireType, found: WireType },
    #[error("expected UTF-8 text, found invalid bytes at string offset {valid_up_to}")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("expected {expected}, found {found}")]
    BadEnum { found: i64, expected: &'static str },
    #[error("expected an int32, found {found}")]
    NotInt32 { found: i64 },
    #[error("expected a finite score, found {found}")]
    NotFinite { found: f32 },
    #[error("expected at most {max} pieces")]
    TooManyPieces { max: usize },
}

/// An error reading a `ModelProto`: the byte offset, the field, and what was wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct SpmError {
    /// Byte offset from the start of the file.
    pub offset: usize,
    /// The field being read.
    pub field: SpmField,
    /// What was wrong.
    pub kind: SpmErrorKind,
}

impl fmt::Display for SpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: {}: {}", self.offset, self.field, self.kind)
    }
}

impl std::error::Error for SpmError {}

// ----- Wire format ----------------------------------------------------------------------------

/// A cursor over one message: `buf[pos..end]`, with offsets from the start of the file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    message: SpmMessage,
}

impl<'a> Reader<'a> {
    fn error(&self, offset: usize, member: SpmMember, kind: SpmErrorKind) -> SpmError {
        SpmError { offset, field: SpmField { message: self.message, member }, kind }
    }

    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn scope(&self) -> &'static str {
        match self.message {
            SpmMessage::Model => "file",
            _ => "message",
        }
    }

    fn varint(&mut self, member: SpmMember) -> Result<u64, SpmError> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf[..self.end].get(self.pos) else {
                let kind =
                    SpmErrorKind::Truncated { expected: "a varint", scope: self.scope(), available: self.end - start };
                return Err(self.error(start, member, kind));
            };
            self.pos += 1;
            // The tenth byte holds bit 63 only.
            if i == 9 && byte > 1 {
                return Err(self.error(start, member, SpmErrorKind::VarintTooLong));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error(start, member, SpmErrorKind::VarintTooLong))
    }

    /// The next field's number, wire type and offset; `None` at the end of the message.
    fn tag(&mut self) -> Result<Option<(u32, WireType, usize)>, SpmError> {
        if self.pos == self.end {
            return Ok(None);
        }
        let at = self.pos;
        let tag = self.varint(SpmMember::Tag)?;
        let number = tag >> 3;
        let number = u32::try_from(number)
            .ok()
            .filter(|&n| (1..1 << 29).contains(&n))
            .ok_or_else(|| self.error(at, SpmMember::Tag, SpmErrorKind::BadFieldNumber { number }))?;
        let wire_bits = tag & 7;
        let wire = WireType::from_tag(wire_bits).ok_or_else(|| {
            // tag & 7 < 8.
            let found = u8::try_from(wire_bits).unwrap_or(u8::MAX);
            self.error(at, SpmMember::Tag, SpmErrorKind::UnsupportedWireType { found })
        })?;
        Ok(Some((number, wire, at)))
    }

    fn expect(&self, at: usize, member: SpmMember, found: WireType, expected: WireType) -> Result<(), SpmError> {
        if found == expected {
            Ok(())
        } else {
            Err(self.error(at, member, SpmErrorKind::WrongWireType { expected, found }))
        }
    }

    fn take(&mut self, n: usize, member: SpmMember, expected: &'static str) -> Result<&'a [u8], SpmError> {
        if n > self.remaining() {
            let kind = SpmErrorKind::Truncated { expected, scope: self.scope(), available: self.remaining() };
            return Err(self.error(self.pos, member, kind));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// A length-delimited field's bytes, as a reader for `message` (offsets stay file offsets).
    fn length_delimited(&mut self, member: SpmMember, message: SpmMessage) -> Result<Reader<'a>, SpmError> {
        let at = self.pos;
        let len = self.varint(member)?;
        let available = self.remaining();
        let n = usize::try_from(len).ok().filter(|&n| n <= available).ok_or_else(|| {
            self.error(at, member, SpmErrorKind::LengthPastEnd { len, available, scope: self.scope() })
        })?;
        let start = self.pos;
        self.pos += n;
        Ok(Reader { buf: self.buf, pos: start, end: start + n, message })
    }

    fn string(&mut self, member: SpmMember) -> Result<String, SpmError> {
        let sub = self.length_delimited(member, self.message)?;
        let bytes = &sub.buf[sub.pos..sub.end];
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(e) => Err(self.error(sub.pos, member, SpmErrorKind::InvalidUtf8 { valid_up_to: e.valid_up_to() })),
        }
    }

    /// An int64/int32/enum varint as the signed value protobuf encodes (two's complement).
    fn signed(&mut self, member: SpmMember) -> Result<i64, SpmError> {
        Ok(i64::from_le_bytes(self.varint(member)?.to_le_bytes()))
    }

    fn int32(&mut self, member: SpmMember) -> Result<i32, SpmError> {
        let at = self.pos;
        let value = self.signed(member)?;
        i32::try_from(value).map_err(|_| self.error(at, member, SpmErrorKind::NotInt32 { found: value }))
    }

    fn bool(&mut self, member: SpmMember) -> Result<bool, SpmError> {
        Ok(self.varint(member)? != 0)
    }

    fn float(&mut self, member: SpmMember) -> Result<f32, SpmError> {
        let bytes = self.take(4, member, "4 bytes of a float")?;
        let mut le = [0u8; 4];
        le.copy_from_slice(bytes);
        Ok(f32::from_le_bytes(le))
    }

    fn skip(&mut self, wire: WireType, member: SpmMember) -> Result<(), SpmError> {
        match wire {
            WireType::Varint => self.varint(member).map(drop),
            WireType::Fixed64 => self.take(8, member, "8 bytes of a 64-bit value").map(drop),
            WireType::Fixed32 => self.take(4, member, "4 bytes of a 32-bit value").map(drop),
            WireType::LengthDelimited => self.length_delimited(member, self.message).map(drop),
        }
    }
}

/// Reads a serialized `ModelProto`. Fields not listed in the module docs are skipped; a known
/// field with the wrong wire type, a bad enum value, a truncated value or a length past the end
/// of its message is an error at that byte.
pub fn parse_model_proto(bytes: &[u8]) -> Result<ModelProto, SpmError> {
    let mut r = Reader { buf: bytes, pos: 0, end: bytes.len(), message: SpmMessage::Model };
    let mut model = ModelProto {
        pieces: Vec::new(),
        trainer_spec: TrainerSpec::default(),
        normalizer_spec: NormalizerSpec::default(),
    };
    while let Some((number, wire, at)) = r.tag()? {
        // A message field that appears twice is merged, as protobuf does.
        match number {
            1 => {
                let member = SpmMember::Field("pieces");
                r.expect(at, member, wire, WireType::LengthDelimited)?;
                let index = model.pieces.len();
                if index == MAX_PIECES {
                    return Err(r.error(at, member, SpmErrorKind::TooManyPieces { max: MAX_PIECES }));
                }
                let sub = r.length_delimited(member, SpmMessage::Piece { index })?;
                model.pieces.push(parse_piece(sub)?);
            }
            2 => {
                let member = SpmMember::Field("trainer_spec");
                r.expect(at, member, wire, WireType::LengthDelimited)?;
                let sub = r.length_delimited(member, SpmMessage::TrainerSpec)?;
                parse_trainer_spec(sub, &mut model.trainer_spec)?;
            }
            3 => {
                let member = SpmMember::Field("normalizer_spec");
                r.expect(at, member, wire, WireType::LengthDelimited)?;
                let sub = r.length_delimited(member, SpmMessage::NormalizerSpec)?;
                parse_normalizer_spec(sub, &mut model.normalizer_spec)?;
            }
            _ => r.skip(wire, SpmMember::Unknown(number))?,
        }
    }
    Ok(model)
}

fn parse_piece(mut r: Reader<'_>) -> Result<Piece, SpmError> {
    let mut piece = Piece { piece: String::new(), score: 0.0, kind: PieceType::Normal };
    while let Some((number, wire, at)) = r.tag()? {
        match number {
            1 => {
                let member = SpmMember::Field("piece");
                r.expect(at, member, wire, WireType::LengthDelimited)?;
                piece.piece = r.string(member)?;
            }
            2 => {
                let member = SpmMember::Field("score");
                r.expect(at, member, wire, WireType::Fixed32)?;
                let value_at = r.pos;
                let score = r.float(member)?;
                if !score.is_finite() {
                    return Err(r.error(value_at, member, SpmErrorKind::NotFinite { found: score }));
                }
                piece.score = score;
            }
            3 => {
                let member = SpmMember::Field("type");
                r.expect(at, member, wire, WireType::Varint)?;
                let value_at = r.pos;
                let value = r.signed(member)?;
                piece.kind = PieceType::from_proto(value).ok_or_else(|| {
                    r.error(
                        value_at,
                        member,
                        SpmErrorKind::BadEnum { found: value, expected: "a piece type from 1 to 6" },
                    )
                })?;
            }
            _ => r.skip(wire, SpmMember::Unknown(number))?,
        }
    }
    Ok(piece)
}

fn parse_trainer_spec(mut r: Reader<'_>, spec: &mut TrainerSpec) -> Result<(), SpmError> {
    while let Some((number, wire, at)) = r.tag()? {
        let name = match number {
            3 => "model_type",
            24 => "treat_whitespace_as_suffix",
            35 => "byte_fallback",
            40 => "unk_id",
            41 => "bos_id",
            42 => "eos_id",
            43 => "pad_id",
            _ => {
                r.skip(wire, SpmMember::Unknown(number))?;
                continue;
            }
        };
        let member = SpmMember::Field(name);
        r.expect(at, member, wire, WireType::Varint)?;
        match number {
            3 => {
                let value_at = r.pos;
                let value = r.signed(member)?;
                spec.model_type = SpmModelType::from_proto(value).ok_or_else(|| {
                    let expected = "a model type from 1 to 4 (UNIGRAM, BPE, WORD, CHAR)";
                    r.error(value_at, member, SpmErrorKind::BadEnum { found: value, expected })
                })?;
            }
            24 => spec.treat_whitespace_as_suffix = r.bool(member)?,
            35 => spec.byte_fallback = r.bool(member)?,
            40 => spec.unk_id = r.int32(member)?,
            41 => spec.bos_id = r.int32(member)?,
            42 => spec.eos_id = r.int32(member)?,
            _ => spec.pad_id = r.int32(member)?,
        }
    }
    Ok(())
}

fn parse_normalizer_spec(mut r: Reader<'_>, spec: &mut NormalizerSpec) -> Result<(), SpmError> {
    while let Some((number, wire, at)) = r.tag()? {
        match number {
            1 => {
                let member = SpmMember::Field("name");
                r.expect(at, member, wire, WireType::LengthDelimited)?;
                spec.name = r.string(member)?;
            }
            2 => {
                let member = SpmMember::Field("precompiled_charsmap");
                r.expect(at, member, wire, WireType::LengthDelimited)?;
                let charsmap = r.length_delimited(member, r.message)?;
                spec.precompiled_charsmap_len = charsmap.remaining();
            }
            3..=5 => {
                let name = match number {
                    3 => "add_dummy_prefix",
                    4 => "remove_extra_whitespaces",
                    _ => "escape_whitespaces",
                };
                let member = SpmMember::Field(name);
                r.expect(at, member, wire, WireType::Varint)?;
                let value = r.bool(member)?;
                match number {
                    3 => spec.add_dummy_prefix = value,
                    4 => spec.remove_extra_whitespaces = value,
                    _ => spec.escape_whitespaces = value,
                }
            }
            _ => r.skip(wire, SpmMember::Unknown(number))?,
        }
    }
    Ok(())
}

/// Reads and parses the model file at `path`, refusing files larger than
/// [`MAX_MODEL_FILE_BYTES`] before reading them.
pub fn read_model_file(path: &Path) -> Result<ModelProto, HfError> {
    let io_err = |source| HfError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    if size > MAX_MODEL_FILE_BYTES {
        return Err(HfError::FileTooLarge { path: path.to_owned(), size, max: MAX_MODEL_FILE_BYTES });
    }
    let mut bytes = Vec::new();
    // The file may grow after the check; never read more than the cap (plus one byte to notice).
    file.take(MAX_MODEL_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > MAX_MODEL_FILE_BYTES {
        return Err(HfError::FileTooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            max: MAX_MODEL_FILE_BYTES,
        });
    }
    parse_model_proto(&bytes).map_err(|source| HfError::SentencePiece { path: path.to_owned(), source })
}

// ----- Vocabulary -----------------------------------------------------------------------------

/// Refuses what llama.cpp's SentencePiece (`llama`) tokenizer does differently.
fn check_supported(path: &Path, model: &ModelProto) -> Result<(), HfError> {
    let unsupported = |field: &str, found: &str, expected: &'static str| HfError::UnsupportedTokenizer {
        path: path.to_owned(),
        field: field.to_owned(),
        found: found.to_owned(),
        expected,
    };
    let (t, n) = (&model.trainer_spec, &model.normalizer_spec);
    if t.model_type != SpmModelType::Bpe {
        return Err(unsupported(
            "trainer_spec.model_type",
            t.model_type.name(),
            "BPE: llama.cpp's SentencePiece tokenizer merges the best-scoring pair as SentencePiece's BPE does; \
             other models segment differently",
        ));
    }
    if !t.byte_fallback {
        return Err(unsupported(
            "trainer_spec.byte_fallback",
            "false",
            "true: llama.cpp falls back to byte tokens where this model gives <unk>",
        ));
    }
    if t.treat_whitespace_as_suffix {
        return Err(unsupported(
            "trainer_spec.treat_whitespace_as_suffix",
            "true",
            "false: llama.cpp's SentencePiece tokenizer puts '▁' before words",
        ));
    }
    if n.precompiled_charsmap_len > 0 {
        return Err(unsupported(
            "normalizer_spec.name",
            &n.name,
            "identity (no normalization rules): llama.cpp does not normalize text",
        ));
    }
    if n.remove_extra_whitespaces {
        return Err(unsupported(
            "normalizer_spec.remove_extra_whitespaces",
            "true",
            "false: llama.cpp keeps leading, trailing and repeated spaces",
        ));
    }
    if !n.escape_whitespaces {
        return Err(unsupported("normalizer_spec.escape_whitespaces", "false", "true: llama.cpp writes spaces as '▁'"));
    }
    let texts: HashSet<&str> = model.pieces.iter().map(|p| p.piece.as_str()).collect();
    for byte in 0..=u8::MAX {
        let token = byte_token(byte);
        if !texts.contains(token.as_str()) {
            return Err(HfError::MissingBytePiece { path: path.to_owned(), token });
        }
    }
    Ok(())
}

/// `added_tokens.json`: `{"text": id}`, typed user-defined as convert_hf_to_gguf.py does.
fn added_tokens_file(dir: &Path) -> Result<Vec<AddedToken>, HfError> {
    let path = dir.join(ADDED_TOKENS_FILE);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let value = super::checkpoint::read_json(&path)?;
    let j = Json { path: &path };
    let map = j.object(&value, "(top level)")?;
    let mut out = Vec::with_capacity(map.len());
    for (content, id) in map {
        let id = j.token_id(id, || content.clone())?;
        out.push(AddedToken { id, content: content.clone(), special: false, normalized: false });
    }
    Ok(out)
}

/// `added_tokens_decoder` of `tokenizer_config.json`: `{"id": {"content": ..., "special": ...}}`.
/// As in convert_hf_to_gguf.py, non-special ones always have `▁` written as a space.
fn added_tokens_decoder(files: &ConfigFiles) -> Result<Vec<AddedToken>, HfError> {
    let j = Json { path: &files.tokenizer_config_path };
    let map = match files.tokenizer_config.get("added_tokens_decoder") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => j.object(v, "added_tokens_decoder")?,
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, entry) in map {
        let field = format!("added_tokens_decoder['{key}']");
        let id = key
            .parse::<u32>()
            .ok()
            .filter(|&id| id < MAX_TOKEN_ID)
            .ok_or_else(|| j.field_error(&field, "a token id (an integer from 0 to 4194303) as the key"))?;
        let obj = j.object(entry, &field)?;
        let content =
            j.opt_str(obj, "content", &field)?.ok_or_else(|| j.field_error(&format!("{field}.content"), "a string"))?;
        let special = j.opt_bool(obj, "special", &field)?.unwrap_or(false);
        out.push(AddedToken { id, content: content.to_owned(), special, normalized: true });
    }
    Ok(out)
}

/// Reads the SentencePiece model `path` of the folder `dir` (with the config files already read)
/// and lays out its vocabulary for llama.cpp's `llama` tokenizer; see the module docs.
///
/// Special tokens: `tokenizer_config.json`'s `bos_token` etc. resolved through the pieces and
/// added tokens, else `config.json`'s and `generation_config.json`'s ids, else the trainer spec's
/// `bos_id`, `eos_id`, `unk_id` and `pad_id` (-1: none). BOS is added unless the model has none or
/// `tokenizer_config.json` says otherwise (HF's `LlamaTokenizer` and llama.cpp default to adding
/// it); EOS only when `tokenizer_config.json` asks. `add_space_prefix` is the normalizer's
/// `add_dummy_prefix`, overridden by `add_prefix_space` in `tokenizer_config.json`.
pub(super) fn load(
    dir: &Path,
    path: &Path,
    files: &ConfigFiles,
    vocab_size: Option<usize>,
) -> Result<GgufTokenizer, HfError> {
    let model = read_model_file(path)?;
    check_supported(path, &model)?;
    let mut added = added_tokens_file(dir)?;
    added.extend(added_tokens_decoder(files)?);

    let base: Vec<BaseToken<'_>> = model
        .pieces
        .iter()
        .zip(0u32..)
        .map(|(piece, id)| {
            let kind = piece.kind.token_type();
            // llama.cpp matches user-defined tokens in the raw text, before spaces become '▁'.
            let text = if piece.kind == PieceType::UserDefined {
                Cow::Owned(piece.piece.replace('▁', " "))
            } else {
                Cow::Borrowed(piece.piece.as_str())
            };
            BaseToken { key: &piece.piece, text, id, kind }
        })
        .collect();
    let layout = lay_out_vocab(path, &base, &added, TokenizerModel::Llama, vocab_size)?;
    let scores = layout
        .origins
        .iter()
        .enumerate()
        .map(|(id, origin)| match origin {
            Origin::Base => model.pieces.get(id).map_or(PADDING_SCORE, |p| p.score),
            Origin::Added => ADDED_TOKEN_SCORE,
            Origin::Padding => PADDING_SCORE,
        })
        .collect();

    let t = &model.trainer_spec;
    // -1 (or any negative id) means the model has no such token.
    let id = |value: i32| u32::try_from(value).ok();
    let file = FileSpecials {
        ids: SpecialIds { bos: id(t.bos_id), eos: id(t.eos_id), unk: id(t.unk_id), pad: id(t.pad_id) },
        add_bos: Some(t.bos_id >= 0),
        add_eos: Some(false),
        add_space_prefix: Some(model.normalizer_spec.add_dummy_prefix),
        ..FileSpecials::default()
    };
    let vocab =
        Vocabulary { model: TokenizerModel::Llama, pre: None, layout, scores: Some(scores), merges: Vec::new() };
    finish(dir, files, vocab, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ----- Encoding helpers (protobuf wire format, for building test files) -----

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn tag(number: u32, wire: u8, out: &mut Vec<u8>) {
        varint((u64::from(number) << 3) | u64::from(wire), out);
    }

    fn bytes_field(number: u32, data: &[u8], out: &mut Vec<u8>) {
        tag(number, 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn int_field(number: u32, value: i64, out: &mut Vec<u8>) {
        tag(number, 0, out);
        varint(value as u64, out);
    }

    fn piece(text: &str, score: f32, kind: i64) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        tag(2, 5, &mut p);
        p.extend_from_slice(&score.to_le_bytes());
        int_field(3, kind, &mut p);
        p
    }

    /// What a test model differs in from Llama 2's.
    struct Spec {
        model_type: i64,
        byte_fallback: bool,
        remove_extra_whitespaces: bool,
        treat_whitespace_as_suffix: bool,
        charsmap: &'static [u8],
        missing_byte: Option<u8>,
        bos_id: i64,
        /// Pieces after `▁a`, `▁`, `a`.
        extra: Vec<(&'static str, f32, i64)>,
    }

    impl Default for Spec {
        fn default() -> Self {
            Spec {
                model_type: 2,
                byte_fallback: true,
                remove_extra_whitespaces: false,
                treat_whitespace_as_suffix: false,
                charsmap: b"",
                missing_byte: None,
                bos_id: 1,
                extra: Vec::new(),
            }
        }
    }

    /// A small model like Llama 2's: `<unk>`, `<s>`, `</s>`, the byte pieces, `▁a`, `▁`, `a`.
    fn model_bytes_with(spec: &Spec) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(1, &piece("<unk>", 0.0, 2), &mut out);
        bytes_field(1, &piece("<s>", 0.0, 3), &mut out);
        bytes_field(1, &piece("</s>", 0.0, 3), &mut out);
        for b in (0..=255u8).filter(|&b| Some(b) != spec.missing_byte) {
            bytes_field(1, &piece(&byte_token(b), 0.0, 6), &mut out);
        }
        for &(text, score, kind) in [("▁a", -0.0, 1), ("▁", -1.0, 1), ("a", -2.0, 1)].iter().chain(&spec.extra) {
            bytes_field(1, &piece(text, score, kind), &mut out);
        }
        let mut trainer = Vec::new();
        bytes_field(1, b"corpus.txt", &mut trainer); // input: skipped
        int_field(3, spec.model_type, &mut trainer);
        int_field(24, i64::from(spec.treat_whitespace_as_suffix), &mut trainer);
        int_field(35, i64::from(spec.byte_fallback), &mut trainer);
        int_field(41, spec.bos_id, &mut trainer);
        int_field(43, -1, &mut trainer); // negative int32: ten bytes
        tag(10, 5, &mut trainer); // character_coverage: skipped float
        trainer.extend_from_slice(&0.9995f32.to_le_bytes());
        bytes_field(2, &trainer, &mut out);
        let mut normalizer = Vec::new();
        bytes_field(1, if spec.charsmap.is_empty() { b"identity" } else { b"nmt_nfkc" }, &mut normalizer);
        if !spec.charsmap.is_empty() {
            bytes_field(2, spec.charsmap, &mut normalizer);
        }
        int_field(3, 1, &mut normalizer);
        int_field(4, i64::from(spec.remove_extra_whitespaces), &mut normalizer);
        bytes_field(3, &normalizer, &mut out);
        tag(99, 1, &mut out); // an unknown fixed64 field at the top level
        out.extend_from_slice(&[0; 8]);
        out
    }

    fn model_bytes() -> Vec<u8> {
        model_bytes_with(&Spec::default())
    }

    #[test]
    fn reads_pieces_trainer_and_normalizer_specs() {
        let m = parse_model_proto(&model_bytes()).unwrap();
        assert_eq!(m.pieces.len(), 262);
        assert_eq!(m.pieces[0], Piece { piece: "<unk>".into(), score: 0.0, kind: PieceType::Unknown });
        assert_eq!(m.pieces[3].piece, "<0x00>");
        assert_eq!(m.pieces[3].kind, PieceType::Byte);
        assert_eq!(m.pieces[260], Piece { piece: "▁".into(), score: -1.0, kind: PieceType::Normal });
        let t = &m.trainer_spec;
        assert_eq!((t.model_type, t.byte_fallback, t.treat_whitespace_as_suffix), (SpmModelType::Bpe, true, false));
        assert_eq!((t.unk_id, t.bos_id, t.eos_id, t.pad_id), (0, 1, 2, -1));
        let n = &m.normalizer_spec;
        assert_eq!(n.name, "identity");
        assert_eq!((n.add_dummy_prefix, n.remove_extra_whitespaces, n.escape_whitespaces), (true, false, true));
        assert_eq!(n.precompiled_charsmap_len, 0);
    }

    #[test]
    fn absent_fields_take_the_proto_defaults() {
        let m = parse_model_proto(&[]).unwrap();
        assert!(m.pieces.is_empty());
        assert_eq!(m.trainer_spec, TrainerSpec::default());
        assert_eq!(m.trainer_spec.model_type, SpmModelType::Unigram);
        assert_eq!(m.normalizer_spec, NormalizerSpec::default());
        assert!(m.normalizer_spec.add_dummy_prefix && m.normalizer_spec.remove_extra_whitespaces);
        // A piece with only its text is NORMAL with score 0.
        let mut out = Vec::new();
        let mut p = Vec::new();
        bytes_field(1, b"x", &mut p);
        bytes_field(1, &p, &mut out);
        assert_eq!(
            parse_model_proto(&out).unwrap().pieces[0],
            Piece { piece: "x".into(), score: 0.0, kind: PieceType::Normal }
        );
    }

    fn err(bytes: &[u8]) -> SpmError {
        parse_model_proto(bytes).unwrap_err()
    }

    #[test]
    fn hostile_bytes_are_errors_naming_offset_and_field() {
        // Truncated varint: a tag whose continuation bit promises more.
        let e = err(&[0x8a]);
        assert_eq!(e.offset, 0);
        assert!(matches!(e.kind, SpmErrorKind::Truncated { expected: "a varint", .. }), "{e}");
        assert_eq!(e.to_string(), "byte 0: field tag: expected a varint, found the end of the file (1 bytes left)");

        // A length past the end of the file.
        let e = err(&[0x0a, 0x05, 0x01]);
        assert_eq!(e.offset, 1);
        assert_eq!(e.kind, SpmErrorKind::LengthPastEnd { len: 5, available: 1, scope: "file" });
        assert_eq!(e.to_string(), "byte 1: pieces: expected a length of at most the 1 bytes left in the file, found 5");

        // A length past the end of the enclosing message (though not of the file).
        let mut bytes = vec![0x0a, 0x03, 0x0a, 0x04, b'a'];
        bytes.extend_from_slice(b"bcdefgh");
        let e = err(&bytes);
        assert_eq!((e.offset, e.field.to_string()), (3, "pieces[0].piece".to_string()), "{e}");
        assert!(matches!(e.kind, SpmErrorKind::LengthPastEnd { len: 4, available: 1, .. }), "{e}");

        // Wrong wire type for a known field: pieces as a varint.
        let e = err(&[0x08, 0x01]);
        assert_eq!(
            e.kind,
            SpmErrorKind::WrongWireType { expected: WireType::LengthDelimited, found: WireType::Varint }
        );
        assert_eq!(
            e.to_string(),
            "byte 0: pieces: expected wire type 2 (length-delimited), found wire type 0 (varint)"
        );
        // ... and inside a piece: score as a varint.
        let e = err(&[0x0a, 0x02, 0x10, 0x01]);
        assert_eq!((e.offset, e.field.to_string()), (2, "pieces[0].score".to_string()));

        // Groups, field number 0, a varint of 11 bytes, a 10th byte above 1.
        assert!(matches!(err(&[0x0b]).kind, SpmErrorKind::UnsupportedWireType { found: 3 }));
        assert!(matches!(err(&[0x02, 0x00]).kind, SpmErrorKind::BadFieldNumber { number: 0 }));
        assert_eq!(err(&[0x80; 11]).kind, SpmErrorKind::VarintTooLong);
        let mut long = vec![0xff; 9];
        long.push(0x02);
        assert_eq!(err(&long).kind, SpmErrorKind::VarintTooLong);

        // A float cut short, a bad enum, text that is not UTF-8, a score that is not finite.
        let e = err(&[0x0a, 0x03, 0x15, 0x00, 0x00]);
        assert!(
            matches!(e.kind, SpmErrorKind::Truncated { expected: "4 bytes of a float", scope: "message", .. }),
            "{e}"
        );
        let e = err(&[0x0a, 0x02, 0x18, 0x07]);
        assert_eq!(
            (e.offset, e.kind.clone()),
            (3, SpmErrorKind::BadEnum { found: 7, expected: "a piece type from 1 to 6" })
        );
        let e = err(&[0x0a, 0x03, 0x0a, 0x01, 0xff]);
        assert!(matches!(e.kind, SpmErrorKind::InvalidUtf8 { valid_up_to: 0 }), "{e}");
        let mut nan = vec![0x0a, 0x05, 0x15];
        nan.extend_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(err(&nan).kind, SpmErrorKind::NotFinite { .. }));
        // An int32 field holding a value beyond 32 bits; a model type out of range.
        let mut big = Vec::new();
        let mut trainer = Vec::new();
        int_field(41, 1 << 40, &mut trainer);
        bytes_field(2, &trainer, &mut big);
        let e = err(&big);
        assert_eq!(
            (e.field.to_string(), e.kind.clone()),
            ("trainer_spec.bos_id".into(), SpmErrorKind::NotInt32 { found: 1 << 40 })
        );
        let mut bad_type = Vec::new();
        bytes_field(2, &[0x18, 0x09], &mut bad_type);
        assert!(matches!(err(&bad_type).kind, SpmErrorKind::BadEnum { found: 9, .. }));
    }

    #[test]
    fn every_prefix_and_every_byte_flip_is_an_error_or_a_model_never_a_panic() {
        let bytes = model_bytes();
        for end in 0..bytes.len() {
            let _ = parse_model_proto(&bytes[..end]);
        }
        // Cutting inside the final fixed64 of the unknown field.
        assert!(matches!(err(&bytes[..bytes.len() - 1]).kind, SpmErrorKind::Truncated { .. }));
        let mut flipped = bytes.clone();
        for i in 0..flipped.len() {
            for mask in [0x01, 0x80, 0xff] {
                flipped[i] ^= mask;
                let _ = parse_model_proto(&flipped);
                flipped[i] ^= mask;
            }
        }
    }

    // ----- The vocabulary of a model folder -----

    /// A folder holding `tokenizer.model` and `files` (name, contents).
    fn folder(model: &[u8], files: &[(&str, String)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SPM_FILE), model).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn load_dir(model: &[u8], files: &[(&str, String)], vocab_size: Option<usize>) -> Result<GgufTokenizer, HfError> {
        let dir = folder(model, files);
        super::super::load_tokenizer(dir.path(), vocab_size)
    }

    #[test]
    fn a_model_alone_gives_pieces_scores_types_and_trainer_ids() {
        let t = load_dir(&model_bytes(), &[], None).unwrap();
        assert_eq!(t.model, TokenizerModel::Llama);
        assert_eq!(t.pre, None);
        assert_eq!(t.tokens.len(), 262);
        assert_eq!(&t.tokens[..4], ["<unk>", "<s>", "</s>", "<0x00>"]);
        assert_eq!(&t.tokens[259..], ["▁a", "▁", "a"]);
        let types = &t.token_types;
        assert_eq!(&types[..3], [token_type::UNKNOWN, token_type::CONTROL, token_type::CONTROL]);
        assert!(types[3..259].iter().all(|&k| k == token_type::BYTE));
        assert_eq!(&types[259..], [token_type::NORMAL; 3]);
        assert_eq!(&t.scores.as_ref().unwrap()[259..], [0.0, -1.0, -2.0]);
        assert_eq!((t.bos_id, t.eos_id, t.unk_id, t.pad_id), (Some(1), Some(2), Some(0), None));
        assert_eq!((t.add_bos, t.add_eos, t.add_space_prefix), (Some(true), Some(false), Some(true)));
        assert!(t.merges.is_empty());
        assert_eq!(t.chat_template, None);

        // Padded to config.json's vocab_size like convert_hf_to_gguf.py; fewer is an error.
        let t = load_dir(&model_bytes(), &[], Some(264)).unwrap();
        assert_eq!(&t.tokens[262..], ["[PAD262]", "[PAD263]"]);
        assert_eq!(&t.token_types[262..], [token_type::UNUSED; 2]);
        assert_eq!(&t.scores.unwrap()[262..], [PADDING_SCORE; 2]);
        let err = load_dir(&model_bytes(), &[], Some(261)).unwrap_err();
        assert!(matches!(err, HfError::VocabSizeMismatch { max_id: 261, vocab_size: 261, .. }), "{err}");

        // A model without BOS does not ask llama.cpp (whose default is to add one) to add it.
        let t = load_dir(&model_bytes_with(&Spec { bos_id: -1, ..Spec::default() }), &[], None).unwrap();
        assert_eq!((t.bos_id, t.add_bos), (None, Some(false)));
    }

    #[test]
    fn config_files_override_the_trainer_spec() {
        let config = serde_json::json!({
            "add_bos_token": false, "add_eos_token": true, "add_prefix_space": false,
            "bos_token": { "content": "</s>" }, "eos_token": "<s>", "pad_token": "<unk>",
            "chat_template": "{{ messages }}",
            "added_tokens_decoder": {
                "0": { "content": "<unk>", "special": true },
                "262": { "content": "▁hello", "special": false },
                "263": { "content": "<|im_start|>", "special": false },
                "3": { "content": "<0x00>", "special": true },
            },
        });
        let files = [
            ("tokenizer_config.json", config.to_string()),
            ("added_tokens.json", serde_json::json!({ "<extra>": 264, "▁x": 265 }).to_string()),
            ("config.json", serde_json::json!({ "unk_token_id": 2 }).to_string()),
        ];
        let t = load_dir(&model_bytes(), &files, Some(266)).unwrap();
        assert_eq!((t.bos_id, t.eos_id, t.pad_id), (Some(2), Some(1), Some(0)));
        // No unk_token in tokenizer_config.json: config.json's id wins over the trainer spec's.
        assert_eq!(t.unk_id, Some(2));
        assert_eq!((t.add_bos, t.add_eos, t.add_space_prefix), (Some(false), Some(true), Some(false)));
        assert_eq!(t.chat_template.as_deref(), Some("{{ messages }}"));
        // Added tokens as convert_hf_to_gguf.py types them, with its score; byte pieces stay bytes.
        assert_eq!((t.tokens[0].as_str(), t.token_types[0]), ("<unk>", token_type::CONTROL));
        assert_eq!((t.tokens[3].as_str(), t.token_types[3]), ("<0x00>", token_type::BYTE));
        assert_eq!((t.tokens[262].as_str(), t.token_types[262]), (" hello", token_type::USER_DEFINED));
        assert_eq!((t.tokens[263].as_str(), t.token_types[263]), ("<|im_start|>", token_type::CONTROL));
        assert_eq!((t.tokens[264].as_str(), t.token_types[264]), ("<extra>", token_type::USER_DEFINED));
        assert_eq!((t.tokens[265].as_str(), t.token_types[265]), ("▁x", token_type::USER_DEFINED));
        let scores = t.scores.unwrap();
        assert_eq!(
            (scores[0], scores[3], scores[262], scores[265]),
            (ADDED_TOKEN_SCORE, 0.0, ADDED_TOKEN_SCORE, ADDED_TOKEN_SCORE)
        );

        // A token id that is not a number names the field.
        let bad = serde_json::json!({ "added_tokens_decoder": { "x": { "content": "y" } } });
        let err = load_dir(&model_bytes(), &[("tokenizer_config.json", bad.to_string())], None).unwrap_err();
        assert!(
            err.to_string().contains("tokenizer_config.json: added_tokens_decoder['x']: expected a token id"),
            "{err}"
        );
    }

    #[test]
    fn user_defined_pieces_are_matched_in_raw_text() {
        let spec = Spec { extra: vec![("<tool>", 0.0, 4), ("▁end▁", 0.0, 4), ("old", 0.0, 5)], ..Spec::default() };
        let t = load_dir(&model_bytes_with(&spec), &[], None).unwrap();
        assert_eq!(&t.tokens[262..], ["<tool>", " end ", "old"]);
        assert_eq!(&t.token_types[262..], [token_type::USER_DEFINED, token_type::USER_DEFINED, token_type::UNUSED]);
    }

    #[test]
    fn tokenizer_json_wins_over_tokenizer_model() {
        let dir = folder(b"not a model at all", &[]);
        // With only a broken tokenizer.model, its error names the file and the byte.
        let err = super::super::load_tokenizer(dir.path(), None).unwrap_err();
        assert!(matches!(&err, HfError::SentencePiece { source, .. } if source.offset == 0), "{err}");
        assert!(err.to_string().ends_with("tokenizer.model: not a valid SentencePiece model"), "{err}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.starts_with("byte 0: "), "{source}");
        // A tokenizer.json next to it is read instead (here an invalid one, to see which is read).
        std::fs::write(dir.path().join("tokenizer.json"), "{").unwrap();
        let err = super::super::load_tokenizer(dir.path(), None).unwrap_err();
        assert!(matches!(&err, HfError::Json { path, .. } if path.ends_with("tokenizer.json")), "{err}");
    }

    #[test]
    fn what_llama_cpp_cannot_reproduce_is_refused_naming_the_field() {
        let cases = [
            (
                Spec { model_type: 1, ..Spec::default() },
                "trainer_spec.model_type 'UNIGRAM' is not supported (expected BPE",
            ),
            (Spec { model_type: 4, ..Spec::default() }, "trainer_spec.model_type 'CHAR' is not supported"),
            (Spec { byte_fallback: false, ..Spec::default() }, "trainer_spec.byte_fallback 'false' is not supported"),
            (
                Spec { treat_whitespace_as_suffix: true, ..Spec::default() },
                "trainer_spec.treat_whitespace_as_suffix 'true' is not supported",
            ),
            (
                Spec { remove_extra_whitespaces: true, ..Spec::default() },
                "normalizer_spec.remove_extra_whitespaces 'true' is not supported",
            ),
            (
                Spec { charsmap: b"\x01\x02", ..Spec::default() },
                "normalizer_spec.name 'nmt_nfkc' is not supported (expected identity",
            ),
            (
                Spec { missing_byte: Some(0x7f), ..Spec::default() },
                "tokenizer.model: pieces: byte piece '<0x7F>' is missing",
            ),
        ];
        for (spec, needle) in cases {
            let err = load_dir(&model_bytes_with(&spec), &[], None).unwrap_err().to_string();
            assert!(err.contains(needle), "expected '{needle}' in: {err}");
            assert!(err.contains("tokenizer.model: "), "{err}");
        }
    }

    #[test]
    fn a_file_above_the_size_cap_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SPM_FILE);
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_MODEL_FILE_BYTES + 1).unwrap(); // sparse: no disk space used
        let err = read_model_file(&path).unwrap_err();
        assert!(matches!(err, HfError::FileTooLarge { size, .. } if size == MAX_MODEL_FILE_BYTES + 1), "{err}");
    }
}
