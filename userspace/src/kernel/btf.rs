//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): enough to find the byte offset
//! of a member path such as `task_struct.nsproxy` or `net.ns.inum`, looking through anonymous
//! structs and unions the way C does. aya parses BTF too, but does not expose member offsets.

use std::collections::HashMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("BTF data is truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct named `{0}`")]
    NoStruct(String),
    #[error("struct `{strukt}` has no member `{member}` in this kernel's BTF")]
    NoMember { strukt: String, member: String },
    #[error("member `{0}` is a bitfield; only byte-aligned members can be read")]
    Bitfield(String),
}

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset from the start of the enclosing struct/union.
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name_off: u32,
    /// For modifiers/typedefs/pointers: the referenced type id.
    ref_type: u32,
    members: Vec<Member>,
}

/// Parsed BTF: the types and the string section.
pub struct Btf {
    /// Index 0 is `void`.
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, BtfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BtfError::Malformed("short read"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("short read"))
}

impl Btf {
    /// Parses raw BTF (little-endian, as on x86_64 and arm64).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_sec = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            ref_type: 0,
            members: Vec::new(),
        }];
        let mut pos = 0usize;
        while pos < types_sec.len() {
            let name_off = u32_at(types_sec, pos)?;
            let info = u32_at(types_sec, pos + 4)?;
            let size_or_type = u32_at(types_sec, pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = pos + i * 12;
                        let off = u32_at(types_sec, m + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (off & 0x00ff_ffff, off >> 24)
                        } else {
                            (off, 0)
                        };
                        members.push(Member {
                            name_off: u32_at(types_sec, m)?,
                            type_id: u32_at(types_sec, m + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM => vlen * 8,
                KIND_FUNC_PROTO => vlen * 8,
                KIND_VAR => 4,
                KIND_DATASEC => vlen * 12,
                KIND_DECL_TAG => 4,
                KIND_ENUM64 => vlen * 12,
                _ => return Err(BtfError::Malformed("unknown BTF kind")),
            };
            pos += extra;
            if pos > types_sec.len() {
                return Err(BtfError::Malformed("type record runs past the section"));
            }
            types.push(Type {
                kind,
                name_off,
                ref_type: size_or_type,
                members,
            });
        }

        let mut btf = Btf {
            types,
            strings,
            structs_by_name: HashMap::new(),
        };
        let mut by_name = HashMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name_off != 0 {
                // Keep the first complete definition of a name.
                by_name
                    .entry(btf.name(t.name_off).to_string())
                    .or_insert(id as u32);
            }
        }
        btf.structs_by_name = by_name;
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.ref_type
                }
                _ => break,
            }
        }
        id
    }

    /// Finds `member` in the struct/union `id`, descending into anonymous members; returns
    /// (bit offset, member type id).
    fn find_member(&self, id: u32, member: &str) -> Option<(u32, u32, u32)> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name_off != 0 && self.name(m.name_off) == member {
                return Some((m.bit_offset, m.type_id, m.bitfield_size));
            }
        }
        for m in &t.members {
            if m.name_off == 0 {
                let inner = self.resolve(m.type_id);
                let kind = self.types.get(inner as usize).map(|t| t.kind);
                if matches!(kind, Some(KIND_STRUCT | KIND_UNION))
                    && let Some((off, ty, bits)) = self.find_member(inner, member)
                {
                    return Some((m.bit_offset + off, ty, bits));
                }
            }
        }
        None
    }

    /// Type id of the kernel function `name` (a `FUNC` record), used to probe fentry support.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_FUNC && self.name(t.name_off) == name)
            .map(|i| i as u32)
    }

    /// Byte offset of `path` (members separated by `.`) inside `struct strukt`.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let mut bits = 0u32;
        let mut owner = strukt.to_string();
        for part in path.split('.') {
            let (off, ty, bitfield) =
                self.find_member(id, part)
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: owner.clone(),
                        member: part.to_string(),
                    })?;
            if bitfield != 0 {
                return Err(BtfError::Bitfield(part.to_string()));
            }
            bits += off;
            id = self.resolve(ty);
            owner = format!("{owner}.{part}");
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield(path.to_string()));
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob by hand:
    /// `struct inner { int a; int b; }; struct outer { long x; union { struct inner in; }; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0a\0b\0inner\0outer\0x\0in\0".to_vec();
        let s = |name: &str| -> u32 {
            let pat = format!("\0{name}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .map(|p| p as u32 + 1)
                .unwrap()
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (4 bytes)
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: struct inner { a @0, b @32 }
        push(&[s("inner"), (KIND_STRUCT << 24) | 2, 8]);
        push(&[s("a"), 1, 0, s("b"), 1, 32]);
        // 3: anonymous union { struct inner in; }
        push(&[0, (KIND_UNION << 24) | 1, 8]);
        push(&[s("in"), 2, 0]);
        // 4: struct outer { int x @0; <anon union> @64 }
        push(&[s("outer"), (KIND_STRUCT << 24) | 2, 16]);
        push(&[s("x"), 1, 0, 0, 3, 64]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(1);
        out.push(0);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn offsets_through_anonymous_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset_of("outer", "x").unwrap(), 0);
        assert_eq!(btf.offset_of("outer", "in").unwrap(), 8);
        assert_eq!(btf.offset_of("outer", "in.b").unwrap(), 12);
        assert_eq!(btf.offset_of("inner", "b").unwrap(), 4);
    }

    #[test]
    fn missing_names_are_clear_errors() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(
            btf.offset_of("nope", "x"),
            Err(BtfError::NoStruct("nope".into()))
        );
        assert_eq!(
            btf.offset_of("outer", "in.zz"),
            Err(BtfError::NoMember {
                strukt: "outer.in".into(),
                member: "zz".into()
            })
        );
    }

    #[test]
    fn truncated_blobs_are_rejected_not_panicking() {
        let b = blob();
        for n in 0..b.len() {
            let _ = Btf::parse(&b[..n]);
        }
        assert!(Btf::parse(&[0u8; 4]).is_err());
    }
}
