//! AES: ECB, CBC, CBC with PKCS#7 padding, CTR (with PKCS#11's counter width) and
//! GCM (IVs of 1 byte to 64 KiB, tags of 96..=128 bits), as streaming [`CipherOp`]s.
//!
//! ECB/CBC/CTR are modes written here over the `aes` block cipher, so that they
//! stream and honour `counter_bits`; GCM with the usual 96-bit IV goes through the
//! `aes-gcm` crate, other IV lengths through the GHASH below (SP 800-38D).

use super::CipherOp;
use super::KeyMaterial;
use crate::error::{Error, Result};
use crate::hsm::mechanism::Mechanism;
use ::aes::cipher::generic_array::GenericArray;
use ::aes::cipher::{BlockCipher, BlockDecrypt, BlockEncrypt, BlockSizeUser, KeyInit};
use ::aes::{Aes128, Aes192, Aes256};
use aes_gcm::aead::consts::{U12, U13, U14, U15, U16};
use aes_gcm::aead::AeadInPlace;
use pkcs11_sys::*;
use zeroize::{Zeroize, Zeroizing};

/// Most a buffering operation (GCM) will hold; more is a length error.
const MAX_BUFFERED: usize = 1 << 28;

/// The raw value of an AES key: a secret of 16, 24 or 32 bytes.
pub(crate) fn aes_key(key: &KeyMaterial) -> Result<&[u8]> {
    match key {
        KeyMaterial::Secret(v) if matches!(v.len(), 16 | 24 | 32) => Ok(v),
        KeyMaterial::Secret(v) => Err(Error::new(
            CKR_KEY_SIZE_RANGE,
            format!("AES key of {} bytes", v.len()),
        )),
        _ => Err(super::wrong_key("AES needs a secret key")),
    }
}

fn finished() -> Error {
    Error::new(CKR_OPERATION_NOT_INITIALIZED, "operation already finished")
}

/// AES of one of the three key sizes.
pub(crate) enum AesBlock {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

impl AesBlock {
    pub(crate) fn new(key: &[u8]) -> Result<AesBlock> {
        let bad = |_| Error::new(CKR_KEY_SIZE_RANGE, "AES key size");
        Ok(match key.len() {
            16 => AesBlock::A128(Aes128::new_from_slice(key).map_err(bad)?),
            24 => AesBlock::A192(Aes192::new_from_slice(key).map_err(bad)?),
            32 => AesBlock::A256(Aes256::new_from_slice(key).map_err(bad)?),
            n => {
                return Err(Error::new(
                    CKR_KEY_SIZE_RANGE,
                    format!("AES key of {n} bytes"),
                ))
            }
        })
    }
    pub(crate) fn encrypt(&self, b: &mut [u8; 16]) {
        let g: &mut GenericArray<u8, U16> = b.into();
        match self {
            AesBlock::A128(c) => c.encrypt_block(g),
            AesBlock::A192(c) => c.encrypt_block(g),
            AesBlock::A256(c) => c.encrypt_block(g),
        }
    }
    pub(crate) fn decrypt(&self, b: &mut [u8; 16]) {
        let g: &mut GenericArray<u8, U16> = b.into();
        match self {
            AesBlock::A128(c) => c.decrypt_block(g),
            AesBlock::A192(c) => c.decrypt_block(g),
            AesBlock::A256(c) => c.decrypt_block(g),
        }
    }
}

fn xor_into(dst: &mut [u8; 16], src: &[u8; 16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

fn block_of(chunk: &[u8]) -> [u8; 16] {
    let mut b = [0u8; 16];
    for (d, s) in b.iter_mut().zip(chunk) {
        *d = *s;
    }
    b
}

/// Build the operation for an AES mechanism.
pub(crate) fn cipher(
    mech: &Mechanism,
    key: &KeyMaterial,
    encrypt: bool,
) -> Result<Box<dyn CipherOp>> {
    let raw = aes_key(key)?;
    if let Mechanism::AesGcm { iv, aad, tag_bits } = mech {
        // GCM expands its own key schedule: no block cipher to build here.
        return Ok(Box::new(GcmOp::new(raw, iv, aad, *tag_bits, encrypt)?));
    }
    let block = AesBlock::new(raw)?;
    let mode = match mech {
        Mechanism::AesEcb => BlockMode::Ecb,
        Mechanism::AesCbc { iv } => BlockMode::Cbc(*iv),
        Mechanism::AesCbcPad { iv } => BlockMode::CbcPad(*iv),
        Mechanism::AesCtr {
            counter_block,
            counter_bits,
        } => {
            return Ok(Box::new(CtrOp::new(block, *counter_block, *counter_bits)?));
        }
        _ => return Err(Error::mech_invalid("not an AES mechanism")),
    };
    let chain = match mode {
        BlockMode::Ecb => [0u8; 16],
        BlockMode::Cbc(iv) | BlockMode::CbcPad(iv) => iv,
    };
    Ok(Box::new(BlockOp {
        cipher: block,
        padded: matches!(mode, BlockMode::CbcPad(_)),
        cbc: !matches!(mode, BlockMode::Ecb),
        encrypt,
        chain,
        buf: Zeroizing::new(Vec::new()),
        done: false,
    }))
}

#[derive(Clone, Copy)]
enum BlockMode {
    Ecb,
    Cbc([u8; 16]),
    CbcPad([u8; 16]),
}

/// ECB / CBC / CBC-PAD. Whole blocks are output as soon as they are complete,
/// except that padded decryption keeps the last full block back for `finish`.
struct BlockOp {
    cipher: AesBlock,
    padded: bool,
    cbc: bool,
    encrypt: bool,
    chain: [u8; 16],
    buf: Zeroizing<Vec<u8>>,
    done: bool,
}

impl BlockOp {
    fn ready(&self, total: usize) -> usize {
        let whole = total - total % 16;
        if self.padded && !self.encrypt && whole == total {
            whole.saturating_sub(16)
        } else {
            whole
        }
    }

    fn process(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for chunk in data.chunks_exact(16) {
            let mut b = block_of(chunk);
            if self.encrypt {
                if self.cbc {
                    xor_into(&mut b, &self.chain);
                }
                self.cipher.encrypt(&mut b);
                self.chain = b;
            } else {
                let c = b;
                self.cipher.decrypt(&mut b);
                if self.cbc {
                    xor_into(&mut b, &self.chain);
                }
                self.chain = c;
            }
            out.extend_from_slice(&b);
        }
    }
}

impl CipherOp for BlockOp {
    fn update_len(&self, input_len: usize) -> usize {
        self.ready(self.buf.len().saturating_add(input_len))
    }

    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.done {
            return Err(finished());
        }
        self.buf.extend_from_slice(input);
        let n = self.ready(self.buf.len());
        let data: Zeroizing<Vec<u8>> = Zeroizing::new(self.buf.drain(..n).collect());
        out.reserve(n);
        self.process(&data, out);
        Ok(())
    }

    fn final_len(&self) -> usize {
        if self.padded {
            16
        } else {
            0
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.done {
            return Err(finished());
        }
        self.done = true;
        let rest: Zeroizing<Vec<u8>> = Zeroizing::new(std::mem::take(&mut *self.buf));
        match (self.encrypt, self.padded) {
            (true, false) if !rest.is_empty() => Err(Error::new(
                CKR_DATA_LEN_RANGE,
                "data is not a multiple of the block size",
            )),
            (false, false) if !rest.is_empty() => Err(Error::new(
                CKR_ENCRYPTED_DATA_LEN_RANGE,
                "ciphertext is not a multiple of the block size",
            )),
            (_, false) => Ok(()),
            (true, true) => {
                let pad = 16 - rest.len() % 16;
                let mut last = Zeroizing::new(rest.to_vec());
                last.resize(rest.len() + pad, pad as u8);
                self.process(&last, out);
                Ok(())
            }
            (false, true) => {
                if rest.len() != 16 {
                    return Err(Error::new(
                        CKR_ENCRYPTED_DATA_LEN_RANGE,
                        "ciphertext is not a whole number of blocks",
                    ));
                }
                let mut plain = Zeroizing::new(Vec::with_capacity(16));
                self.process(&rest, &mut plain);
                let block = Zeroizing::new(block_of(&plain));
                let keep = unpad(&block)
                    .ok_or_else(|| Error::new(CKR_ENCRYPTED_DATA_INVALID, "bad padding"))?;
                out.extend_from_slice(block.get(..keep).unwrap_or(&[]));
                Ok(())
            }
        }
    }
}

/// Check PKCS#7 padding of the last block without data-dependent branches; the
/// number of data bytes it holds.
pub(crate) fn unpad(block: &[u8; 16]) -> Option<usize> {
    let pad = block[15];
    // valid iff 1 <= pad <= 16 and the last `pad` bytes all equal pad
    let mut bad = u8::from(pad == 0) | u8::from(pad > 16);
    for (i, &b) in block.iter().enumerate() {
        let in_pad = u8::from(16 - i <= usize::from(pad));
        bad |= in_pad & u8::from(b != pad);
    }
    (bad == 0).then(|| 16 - usize::from(pad))
}

/// CTR: the low `counter_bits` bits of the counter block count; running past them
/// is `CKR_DATA_LEN_RANGE` (checked before any output of the failing call).
struct CtrOp {
    cipher: AesBlock,
    counter: u128,
    mask: u128,
    /// Keystream blocks still available before the counter would wrap.
    remaining: u128,
    ks: Zeroizing<[u8; 16]>,
    ks_used: usize,
    done: bool,
}

impl CtrOp {
    fn new(cipher: AesBlock, block: [u8; 16], bits: u32) -> Result<CtrOp> {
        if !(1..=128).contains(&bits) {
            return Err(Error::mech_param(format!("CTR counter bits {bits}")));
        }
        let mask = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let counter = u128::from_be_bytes(block);
        Ok(CtrOp {
            cipher,
            counter,
            mask,
            remaining: (mask - (counter & mask)).saturating_add(1),
            ks: Zeroizing::new([0u8; 16]),
            ks_used: 16,
            done: false,
        })
    }
}

impl CipherOp for CtrOp {
    fn update_len(&self, input_len: usize) -> usize {
        input_len
    }

    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.done {
            return Err(finished());
        }
        let need = input.len().saturating_sub(16 - self.ks_used);
        let blocks = need.div_ceil(16) as u128;
        if blocks > self.remaining {
            return Err(Error::new(CKR_DATA_LEN_RANGE, "CTR counter would wrap"));
        }
        out.reserve(input.len());
        for &b in input {
            if self.ks_used == 16 {
                let mut k = self.counter.to_be_bytes();
                self.cipher.encrypt(&mut k);
                *self.ks = k;
                let low = (self.counter & self.mask).wrapping_add(1) & self.mask;
                self.counter = (self.counter & !self.mask) | low;
                self.remaining = self.remaining.saturating_sub(1);
                self.ks_used = 0;
            }
            let k = self.ks.get(self.ks_used).copied().unwrap_or(0);
            out.push(b ^ k);
            self.ks_used += 1;
        }
        Ok(())
    }

    fn final_len(&self) -> usize {
        0
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<()> {
        if self.done {
            return Err(finished());
        }
        self.done = true;
        Ok(())
    }
}

/// GCM: everything is buffered; `finish` outputs ciphertext||tag, or the plaintext
/// once the tag has been verified.
struct GcmOp {
    /// The key, in place rather than on the heap (no allocation per operation).
    key: Zeroizing<[u8; 32]>,
    key_len: usize,
    iv: Vec<u8>,
    aad: Vec<u8>,
    tag_len: usize,
    encrypt: bool,
    buf: Zeroizing<Vec<u8>>,
    done: bool,
}

impl GcmOp {
    fn new(key: &[u8], iv: &[u8], aad: &[u8], tag_bits: u32, encrypt: bool) -> Result<GcmOp> {
        if !(96..=128).contains(&tag_bits) || tag_bits % 8 != 0 {
            return Err(Error::mech_param(format!("GCM tag of {tag_bits} bits")));
        }
        // PKCS#11 allows IVs up to 2^32-1 bytes; 64 KiB is far beyond any real use
        // and bounds the work one call can ask for.
        if iv.is_empty() || iv.len() > 65_536 {
            return Err(Error::mech_param(format!("GCM IV of {} bytes", iv.len())));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        let Some(dst) = k.get_mut(..key.len()) else {
            return Err(Error::new(CKR_KEY_SIZE_RANGE, "AES key size"));
        };
        dst.copy_from_slice(key);
        Ok(GcmOp {
            key: k,
            key_len: key.len(),
            iv: iv.to_vec(),
            aad: aad.to_vec(),
            tag_len: (tag_bits / 8) as usize,
            encrypt,
            buf: Zeroizing::new(Vec::new()),
            done: false,
        })
    }
}

impl CipherOp for GcmOp {
    fn update_len(&self, _input_len: usize) -> usize {
        0
    }

    fn update(&mut self, input: &[u8], _out: &mut Vec<u8>) -> Result<()> {
        if self.done {
            return Err(finished());
        }
        if self.buf.len().saturating_add(input.len()) > MAX_BUFFERED {
            let rv = if self.encrypt {
                CKR_DATA_LEN_RANGE
            } else {
                CKR_ENCRYPTED_DATA_LEN_RANGE
            };
            return Err(Error::new(rv, "too much data for one GCM operation"));
        }
        self.buf.extend_from_slice(input);
        Ok(())
    }

    fn final_len(&self) -> usize {
        if self.encrypt {
            self.buf.len().saturating_add(self.tag_len)
        } else {
            self.buf.len().saturating_sub(self.tag_len)
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.done {
            return Err(finished());
        }
        self.done = true;
        let key = &self.key[..self.key_len];
        if self.encrypt {
            if let Ok(nonce) = <[u8; 12]>::try_from(self.iv.as_slice()) {
                // The usual case: seal in the caller's output, no intermediate buffer.
                let start = out.len();
                out.reserve(self.buf.len() + self.tag_len);
                out.extend_from_slice(&self.buf);
                self.buf.zeroize();
                let mut tag = [0u8; 16];
                let sealed = gcm12_seal_dispatch(
                    key,
                    nonce,
                    &self.aad,
                    &mut out[start..],
                    self.tag_len,
                    &mut tag,
                );
                if let Err(e) = sealed {
                    out[start..].zeroize();
                    out.truncate(start);
                    return Err(e);
                }
                out.extend_from_slice(&tag[..self.tag_len]);
                return Ok(());
            }
            let mut data = Zeroizing::new(std::mem::take(&mut *self.buf));
            let tag = gcm_seal(key, &self.iv, &self.aad, &mut data, self.tag_len)?;
            out.reserve(data.len() + tag.len());
            out.extend_from_slice(&data);
            out.extend_from_slice(&tag);
        } else {
            let mut data = Zeroizing::new(std::mem::take(&mut *self.buf));
            let Some(ct_len) = data.len().checked_sub(self.tag_len) else {
                return Err(Error::new(
                    CKR_ENCRYPTED_DATA_LEN_RANGE,
                    "ciphertext shorter than the GCM tag",
                ));
            };
            let tag = data.split_off(ct_len);
            gcm_open(key, &self.iv, &self.aad, &mut data, &tag)?;
            out.extend_from_slice(&data);
        }
        Ok(())
    }
}

fn tag_mismatch() -> Error {
    Error::new(CKR_ENCRYPTED_DATA_INVALID, "GCM tag mismatch")
}

/// Encrypt `data` in place; the tag.
pub(crate) fn gcm_seal(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    data: &mut [u8],
    tag_len: usize,
) -> Result<Vec<u8>> {
    if let Ok(nonce) = <[u8; 12]>::try_from(iv) {
        let mut tag = [0u8; 16];
        gcm12_seal_dispatch(key, nonce, aad, data, tag_len, &mut tag)?;
        Ok(tag[..tag_len].to_vec())
    } else {
        let gcm = Gcm::new(key, iv)?;
        gcm.ctr(data);
        Ok(gcm.tag(aad, data, tag_len))
    }
}

/// Verify the tag over `data`, then decrypt it in place. Tag mismatch ->
/// `CKR_ENCRYPTED_DATA_INVALID`, and `data` is left as ciphertext.
pub(crate) fn gcm_open(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    data: &mut [u8],
    tag: &[u8],
) -> Result<()> {
    if let Ok(nonce) = <[u8; 12]>::try_from(iv) {
        gcm12_open_dispatch(key, nonce, aad, data, tag)
    } else {
        let gcm = Gcm::new(key, iv)?;
        let expect = gcm.tag(aad, data, tag.len());
        if !ct_eq(&expect, tag) {
            return Err(tag_mismatch());
        }
        gcm.ctr(data);
        Ok(())
    }
}

pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `$f::<AesN, Tn>(args)` for the key's size and the tag's length (the `aes-gcm` crate
/// fixes both in the type).
macro_rules! gcm12_dispatch {
    ($f:ident, $key_len:expr, $tag_len:expr, ($($arg:expr),*)) => {
        match $key_len {
            16 => gcm12_dispatch!(@tag $f, Aes128, $tag_len, ($($arg),*)),
            24 => gcm12_dispatch!(@tag $f, Aes192, $tag_len, ($($arg),*)),
            32 => gcm12_dispatch!(@tag $f, Aes256, $tag_len, ($($arg),*)),
            _ => Err(Error::new(CKR_KEY_SIZE_RANGE, "AES key size")),
        }
    };
    (@tag $f:ident, $aes:ty, $tag_len:expr, ($($arg:expr),*)) => {
        match $tag_len {
            12 => $f::<$aes, U12>($($arg),*),
            13 => $f::<$aes, U13>($($arg),*),
            14 => $f::<$aes, U14>($($arg),*),
            15 => $f::<$aes, U15>($($arg),*),
            16 => $f::<$aes, U16>($($arg),*),
            _ => Err(Error::mech_param("GCM tag length")),
        }
    };
}

/// Verify and decrypt `data` in place with a 96-bit nonce.
fn gcm12_open_dispatch(
    key: &[u8],
    nonce: [u8; 12],
    aad: &[u8],
    data: &mut [u8],
    tag: &[u8],
) -> Result<()> {
    gcm12_dispatch!(
        gcm12_open,
        key.len(),
        tag.len(),
        (key, nonce, aad, data, tag)
    )
}

/// Seal `data` in place with a 96-bit nonce; the tag goes to the front of `tag`.
fn gcm12_seal_dispatch(
    key: &[u8],
    nonce: [u8; 12],
    aad: &[u8],
    data: &mut [u8],
    tag_len: usize,
    tag: &mut [u8; 16],
) -> Result<()> {
    gcm12_dispatch!(gcm12_seal, key.len(), tag_len, (key, nonce, aad, data, tag))
}

fn gcm12_seal<A, T>(
    key: &[u8],
    nonce: [u8; 12],
    aad: &[u8],
    data: &mut [u8],
    tag: &mut [u8; 16],
) -> Result<()>
where
    A: BlockCipher + BlockSizeUser<BlockSize = U16> + BlockEncrypt + KeyInit,
    T: aes_gcm::TagSize,
{
    let c = aes_gcm::AesGcm::<A, U12, T>::new_from_slice(key)
        .map_err(|_| Error::new(CKR_KEY_SIZE_RANGE, "AES key size"))?;
    let t = c
        .encrypt_in_place_detached(&GenericArray::from(nonce), aad, data)
        .map_err(|_| Error::new(CKR_DATA_LEN_RANGE, "GCM input too long"))?;
    tag[..t.len()].copy_from_slice(&t);
    Ok(())
}

/// The `aes-gcm` crate, 96-bit nonce: open (`data` is left as it was on a mismatch).
fn gcm12_open<A, T>(
    key: &[u8],
    nonce: [u8; 12],
    aad: &[u8],
    data: &mut [u8],
    tag: &[u8],
) -> Result<()>
where
    A: BlockCipher + BlockSizeUser<BlockSize = U16> + BlockEncrypt + KeyInit,
    T: aes_gcm::TagSize,
{
    let c = aes_gcm::AesGcm::<A, U12, T>::new_from_slice(key)
        .map_err(|_| Error::new(CKR_KEY_SIZE_RANGE, "AES key size"))?;
    let t = GenericArray::<u8, T>::from_exact_iter(tag.iter().copied()).ok_or_else(tag_mismatch)?;
    c.decrypt_in_place_detached(&GenericArray::from(nonce), aad, data, &t)
        .map_err(|_| tag_mismatch())
}

/// GCM per SP 800-38D for IVs other than 96 bits.
struct Gcm {
    cipher: AesBlock,
    h: u128,
    j0: u128,
}

const GF_R: u128 = 0xe1 << 120;

/// Multiplication in GF(2^128) with GCM's bit order, without data-dependent branches.
fn gf_mul(x: u128, y: u128) -> u128 {
    let mut z = 0u128;
    let mut v = y;
    for i in 0..128 {
        let bit = (x >> (127 - i)) & 1;
        z ^= v & bit.wrapping_neg();
        let lsb = v & 1;
        v = (v >> 1) ^ (GF_R & lsb.wrapping_neg());
    }
    z
}

fn ghash_update(h: u128, y: &mut u128, data: &[u8]) {
    for chunk in data.chunks(16) {
        *y = gf_mul(*y ^ u128::from_be_bytes(block_of(chunk)), h);
    }
}

impl Gcm {
    fn new(key: &[u8], iv: &[u8]) -> Result<Gcm> {
        let cipher = AesBlock::new(key)?;
        let mut hb = [0u8; 16];
        cipher.encrypt(&mut hb);
        let h = u128::from_be_bytes(hb);
        let j0 = if iv.len() == 12 {
            let mut b = [0u8; 16];
            for (d, s) in b.iter_mut().zip(iv) {
                *d = *s;
            }
            u128::from_be_bytes(b) | 1
        } else {
            let mut y = 0u128;
            ghash_update(h, &mut y, iv);
            let bits = (iv.len() as u128) * 8;
            y = gf_mul(y ^ bits, h);
            y
        };
        Ok(Gcm { cipher, h, j0 })
    }

    fn inc32(x: u128) -> u128 {
        let low = (x as u32).wrapping_add(1);
        (x & !0xffff_ffffu128) | u128::from(low)
    }

    /// GCTR starting at inc32(J0), in place.
    fn ctr(&self, data: &mut [u8]) {
        let mut cb = self.j0;
        for chunk in data.chunks_mut(16) {
            cb = Self::inc32(cb);
            let mut ks = cb.to_be_bytes();
            self.cipher.encrypt(&mut ks);
            for (d, k) in chunk.iter_mut().zip(ks.iter()) {
                *d ^= k;
            }
        }
    }

    fn tag(&self, aad: &[u8], ct: &[u8], tag_len: usize) -> Vec<u8> {
        let mut y = 0u128;
        ghash_update(self.h, &mut y, aad);
        ghash_update(self.h, &mut y, ct);
        let lens = ((aad.len() as u128 * 8) << 64) | (ct.len() as u128 * 8);
        y = gf_mul(y ^ lens, self.h);
        let mut ej0 = self.j0.to_be_bytes();
        self.cipher.encrypt(&mut ej0);
        let t = (u128::from_be_bytes(ej0) ^ y).to_be_bytes();
        t.iter().take(tag_len).copied().collect()
    }
}

#[cfg(test)]
pub(crate) fn gcm_generic_seal(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    data: &mut [u8],
    tag_len: usize,
) -> Vec<u8> {
    let Ok(gcm) = Gcm::new(key, iv) else {
        return Vec::new();
    };
    gcm.ctr(data);
    gcm.tag(aad, data, tag_len)
}
