//! Token sampling and detokenization for generation, through llama.cpp's own sampler chain and
//! vocabulary, so that what gguftune generates is what llama.cpp (and so Ollama) generates.

use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::{Error, LlamaContext, LlamaModel};

/// How the next token is chosen, as llama.cpp's `--temp`, `--top-k`, `--top-p` and `--seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    /// Temperature; `0` (or less) picks the most likely token (greedy decoding).
    pub temp: f32,
    /// Keep only the `top_k` most likely tokens (`0`: all).
    pub top_k: i32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (`1`: all).
    pub top_p: f32,
    /// Seed of the random draw.
    pub seed: u32,
}

/// A llama.cpp sampler chain (`llama_sampler_chain_init`), owned.
#[derive(Debug)]
pub struct Sampler {
    ptr: NonNull<sys::llama_sampler>,
}

impl Sampler {
    /// The chain llama.cpp's tools build for these parameters: greedy for `temp <= 0`, else
    /// top-k, top-p, temperature, then a seeded draw from what is left (the order of
    /// `common_sampler`'s defaults, without the penalties).
    pub fn new(params: &SamplerParams) -> Result<Sampler, Error> {
        // SAFETY: returns a plain struct of defaults.
        let chain_params = unsafe { sys::llama_sampler_chain_default_params() };
        // SAFETY: creates an empty chain; null on allocation failure.
        let ptr = unsafe { sys::llama_sampler_chain_init(chain_params) };
        let sampler = Sampler { ptr: NonNull::new(ptr).ok_or(Error::SamplerFailed)? };
        if params.temp <= 0.0 {
            // SAFETY: a fresh sampler with no arguments.
            sampler.add(unsafe { sys::llama_sampler_init_greedy() })?;
        } else {
            // SAFETY: each constructor takes plain values and returns a fresh sampler (or null).
            unsafe {
                sampler.add(sys::llama_sampler_init_top_k(params.top_k))?;
                sampler.add(sys::llama_sampler_init_top_p(params.top_p, 1))?;
                sampler.add(sys::llama_sampler_init_temp(params.temp))?;
                sampler.add(sys::llama_sampler_init_dist(params.seed))?;
            }
        }
        Ok(sampler)
    }

    /// Hands `stage` to the chain, which owns and frees it from then on.
    fn add(&self, stage: *mut sys::llama_sampler) -> Result<(), Error> {
        if stage.is_null() {
            return Err(Error::SamplerFailed);
        }
        // SAFETY: live chain owned by self; `stage` is a fresh, non-null sampler owned by no one
        // else, whose ownership passes to the chain.
        unsafe { sys::llama_sampler_chain_add(self.ptr.as_ptr(), stage) };
        Ok(())
    }

    /// Chooses the token that follows the last [`LlamaContext::decode`] of `ctx`, and records it
    /// in the chain's state (`llama_sampler_sample` calls `llama_sampler_accept` itself).
    pub fn sample(&mut self, ctx: &LlamaContext<'_>) -> Result<i32, Error> {
        if !ctx.last_logits {
            return Err(Error::NothingDecoded);
        }
        // SAFETY: live sampler and context; the last batch asked for the logits of its last
        // token (checked: llama.cpp asserts that they exist), and llama_sampler_sample reads
        // only that row (idx -1).
        let token = unsafe { sys::llama_sampler_sample(self.ptr.as_ptr(), ctx.ptr.as_ptr(), -1) };
        Ok(token)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the chain came from llama_sampler_chain_init and is freed once, here, with the
        // stages it owns.
        unsafe { sys::llama_sampler_free(self.ptr.as_ptr()) }
    }
}

impl LlamaModel {
    /// The bytes token `t` stands for (`llama_token_to_piece`). Control tokens (BOS, EOS, chat
    /// markers) give no bytes unless `special`. A piece can be part of a UTF-8 character (byte
    /// tokens), hence bytes, not a string.
    pub fn token_to_piece(&self, t: i32, special: bool) -> Result<Vec<u8>, Error> {
        let n_vocab = self.n_vocab();
        if t < 0 || t as usize >= n_vocab {
            return Err(Error::TokenOutOfRange { token: t, n_vocab });
        }
        // SAFETY: live model; its vocab lives as long as it does.
        let vocab = unsafe { sys::llama_model_get_vocab(self.ptr.as_ptr()) };
        let mut buf = vec![0u8; 64];
        loop {
            let len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: `t` is in the vocabulary (checked: llama.cpp would throw across the C
            // boundary otherwise); the buffer and its length come from the same Vec, and
            // llama.cpp writes at most `len` bytes, returning the negated size when it needs more.
            let n = unsafe { sys::llama_token_to_piece(vocab, t, buf.as_mut_ptr().cast(), len, 0, special) };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf.resize(n.unsigned_abs() as usize, 0);
        }
    }

    /// Whether `t` ends generation (`llama_vocab_is_eog`: EOS, EOT and the chat end-of-turn
    /// tokens llama.cpp recognises).
    pub fn is_eog(&self, t: i32) -> bool {
        // SAFETY: live model; its vocab lives as long as it does; llama.cpp looks `t` up in a set,
        // so any value is safe.
        unsafe { sys::llama_vocab_is_eog(sys::llama_model_get_vocab(self.ptr.as_ptr()), t) }
    }
}
