//! A ClientHello builder, for the parser's tests and the kernel's (`tests/`): the record
//! and handshake headers and every length computed; a test that wants a wrong length
//! patches the bytes after. Host code only (`feature = "user"`).

extern crate alloc;

use alloc::{vec, vec::Vec};

use super::{
    CONTENT_TYPE_HANDSHAKE, EXTENSION_SERVER_NAME, EXTENSION_SUPPORTED_VERSIONS,
    HANDSHAKE_CLIENT_HELLO, NAME_TYPE_HOST_NAME, TLS1_0, TLS1_2, TLS1_3,
};

/// A ClientHello to build: the record and handshake headers and every length are
/// computed by [`Hello::build`]; tests that want a wrong length patch the bytes after.
#[derive(Clone, Debug)]
pub struct Hello {
    pub record_version: u16,
    pub client_version: u16,
    pub session_id: Vec<u8>,
    pub suites: Vec<u16>,
    pub compression: Vec<u8>,
    /// `None`: the ClientHello ends after its compression methods.
    pub extensions: Option<Vec<(u16, Vec<u8>)>>,
}

pub const SUPPORTED_GROUPS: u16 = 10;
pub const SIGNATURE_ALGORITHMS: u16 = 13;
pub const KEY_SHARE: u16 = 51;
pub const ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
pub const X25519: u16 = 0x001d;
pub const X25519_MLKEM768: u16 = 0x11ec;

impl Hello {
    /// TLS 1.2 only, as `openssl s_client -tls1_2` sends it: no supported_versions.
    pub fn tls12(host: &str) -> Self {
        Self {
            record_version: TLS1_0,
            client_version: TLS1_2,
            session_id: vec![],
            suites: vec![0xc02b, 0xc02f, 0xc02c, 0xc030, 0x00ff],
            compression: vec![0],
            extensions: Some(vec![
                (EXTENSION_SERVER_NAME, sni(&[(NAME_TYPE_HOST_NAME, host)])),
                (SUPPORTED_GROUPS, groups(&[X25519, 0x0017])),
                (SIGNATURE_ALGORITHMS, u16_list(&[0x0403, 0x0804, 0x0401])),
            ]),
        }
    }

    /// TLS 1.3, falling back to 1.2.
    pub fn tls13(host: &str) -> Self {
        let mut hello = Self::tls12(host);
        hello.session_id = vec![0x5e; 32];
        hello.suites.splice(0..0, [0x1301, 0x1302, 0x1303]);
        hello.push(EXTENSION_SUPPORTED_VERSIONS, versions(&[TLS1_3, TLS1_2]));
        hello.push(KEY_SHARE, key_share(&[(X25519, 32)]));
        hello
    }

    /// About 1.7 KB, as a current Chrome sends: GREASE first and last, a post-quantum
    /// key share, and the server_name after the key share or before it.
    pub fn post_quantum(host: &str, sni_after_key_share: bool) -> Self {
        let mut hello = Self::tls13(host);
        let mut extensions = vec![(0x2a2a, vec![])];
        let server_name = (EXTENSION_SERVER_NAME, sni(&[(NAME_TYPE_HOST_NAME, host)]));
        if !sni_after_key_share {
            extensions.push(server_name.clone());
        }
        extensions.extend([
            (SUPPORTED_GROUPS, groups(&[0x3a3a, X25519_MLKEM768, X25519])),
            (
                EXTENSION_SUPPORTED_VERSIONS,
                versions(&[0x7a7a, TLS1_3, TLS1_2]),
            ),
            (
                KEY_SHARE,
                key_share(&[(0x3a3a, 1), (X25519_MLKEM768, 1216), (X25519, 32)]),
            ),
            (SIGNATURE_ALGORITHMS, u16_list(&[0x0403, 0x0804, 0x0401])),
            // A GREASE encrypted_client_hello, as Chrome sends without ECH configured.
            (ENCRYPTED_CLIENT_HELLO, vec![0x5c; 218]),
        ]);
        if sni_after_key_share {
            extensions.push(server_name);
        }
        extensions.push((0x4a4a, vec![0]));
        hello.extensions = Some(extensions);
        hello
    }

    pub fn push(&mut self, kind: u16, contents: Vec<u8>) -> &mut Self {
        self.extensions
            .get_or_insert_with(Vec::new)
            .push((kind, contents));
        self
    }

    pub fn without(mut self, kind: u16) -> Self {
        if let Some(extensions) = &mut self.extensions {
            extensions.retain(|(k, _)| *k != kind);
        }
        self
    }

    pub fn with(mut self, kind: u16, contents: Vec<u8>) -> Self {
        self.push(kind, contents);
        self
    }

    /// The handshake message's body.
    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(self.client_version.to_be_bytes());
        body.extend([0x42; 32]);
        body.push(self.session_id.len() as u8);
        body.extend(&self.session_id);
        body.extend(u16_list(&self.suites));
        body.push(self.compression.len() as u8);
        body.extend(&self.compression);
        if let Some(extensions) = &self.extensions {
            let mut block = Vec::new();
            for (kind, contents) in extensions {
                block.extend(kind.to_be_bytes());
                block.extend((contents.len() as u16).to_be_bytes());
                block.extend(contents);
            }
            body.extend(prefixed16(&block));
        }
        body
    }

    /// The record: one record holding the whole handshake message.
    pub fn build(&self) -> Vec<u8> {
        let body = self.body();
        let mut message = vec![HANDSHAKE_CLIENT_HELLO];
        message.extend(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend(body);
        let mut record = vec![CONTENT_TYPE_HANDSHAKE];
        record.extend(self.record_version.to_be_bytes());
        record.extend(prefixed16(&message));
        record
    }
}

pub fn prefixed16(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend(bytes);
    out
}

/// A two-byte length, then the values.
pub fn u16_list(values: &[u16]) -> Vec<u8> {
    prefixed16(
        &values
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<_>>(),
    )
}

pub fn groups(values: &[u16]) -> Vec<u8> {
    u16_list(values)
}

/// supported_versions' contents: a one-byte length, then the versions.
pub fn versions(list: &[u16]) -> Vec<u8> {
    let mut out = vec![(list.len() * 2) as u8];
    out.extend(list.iter().flat_map(|v| v.to_be_bytes()));
    out
}

/// server_name's contents: entries of a type and a name.
pub fn sni(names: &[(u8, &str)]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend(prefixed16(name.as_bytes()));
    }
    prefixed16(&list)
}

/// key_share's contents: a share of each size for each group.
pub fn key_share(shares: &[(u16, usize)]) -> Vec<u8> {
    let mut list = Vec::new();
    for (group, size) in shares {
        list.extend(group.to_be_bytes());
        list.extend(prefixed16(&vec![0x77; *size]));
    }
    prefixed16(&list)
}
