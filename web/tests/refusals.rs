//! Every refusal of the access check is counted by reason, over real HTTP: no
//! credentials, a wrong token, an unknown user, a wrong password, and a full
//! password-check queue (503 at once).

mod common;

use std::io::Write;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use common::*;
use magnetar_web::basic::MAX_WAITING;
use magnetar_web::{Access, Credentials, Refusal};

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            o.push(if i <= c.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    o
}

#[test]
fn each_refusal_is_counted_by_its_reason() {
    // A costly hash (16 MiB, 8 passes: within the load bound), so that checks
    // queue up behind the two that run.
    let params = Params::new(16 * 1024, 8, 1, None).unwrap();
    let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(
            b"alice's password",
            &SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap(),
        )
        .unwrap()
        .to_string();
    let users = Credentials::parse(&format!("alice:{phc}\n")).unwrap();
    let access =
        Access::decide_with("0.0.0.0:0".parse().unwrap(), None, Some(users), false).unwrap();
    let mut limits = test_limits();
    limits.max_connections = 64;
    limits.max_in_flight = 64;
    let f = fixture();
    let s = start(f.store.clone(), access, limits);
    let auth = |a: &str| request(s.addr, "GET", "/api/v1/stats", &[("Authorization", a)]);
    assert_eq!(get(s.addr, "/api/v1/stats").status, 401);
    assert_eq!(auth("Bearer some-token-or-other").status, 401);
    assert_eq!(auth(&format!("Basic {}", b64("bob:x"))).status, 401);
    assert_eq!(auth(&format!("Basic {}", b64("alice:no"))).status, 401);
    assert_eq!(
        auth(&format!("Basic {}", b64("alice:alice's password"))).status,
        200
    );
    let c = &s.counters;
    assert_eq!(c.refused(Refusal::Missing), 1);
    assert_eq!(c.refused(Refusal::WrongToken), 1);
    assert_eq!(c.refused(Refusal::UnknownUser), 1);
    assert_eq!(c.refused(Refusal::BadPassword), 1);
    assert_eq!(c.refused(Refusal::Busy), 0);
    // A burst of wrong passwords, all sent before any answer is read: the first
    // MAX_WAITING wait for a check (401), the rest find the queue full (503).
    const BURST: usize = 3 * MAX_WAITING;
    let mut conns: Vec<_> = (0..BURST)
        .map(|i| {
            let mut t = connect(s.addr);
            let a = b64(&format!("alice:wrong {i}"));
            write!(
                t,
                "GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {a}\r\n\
                 Connection: close\r\n\r\n"
            )
            .unwrap();
            t
        })
        .collect();
    let statuses: Vec<u16> = conns
        .iter_mut()
        .map(|t| read_response(t).expect("an answer").status)
        .collect();
    let n401 = statuses.iter().filter(|&&s| s == 401).count() as u64;
    let n503 = statuses.iter().filter(|&&s| s == 503).count() as u64;
    assert_eq!(n401 + n503, BURST as u64, "{statuses:?}");
    assert!(n401 >= MAX_WAITING as u64, "{statuses:?}");
    assert!(n503 >= 1, "{statuses:?}");
    // The counters say what the clients saw.
    assert_eq!(c.refused(Refusal::BadPassword), 1 + n401);
    assert_eq!(c.refused(Refusal::Busy), n503);
    assert_eq!(c.refused(Refusal::Missing), 1);
    assert_eq!(c.refused(Refusal::WrongToken), 1);
    assert_eq!(c.refused(Refusal::UnknownUser), 1);
}
