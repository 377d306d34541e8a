//! Property tests (a fuzzer where cargo-fuzz cannot run: it needs a nightly
//! toolchain) of the input a user or a peer controls: address bytes and
//! strings handed to address vectors, remote-memory descriptors, hints, and
//! the conversion of any error or enum value to text. Every case must end
//! in `Ok` or a typed `Err`, never a panic or a crash.
//!
//! CI runs 256 cases per property; `PROPTEST_CASES=20000 cargo test -p
//! libfabric-tests --test fuzz` (or `cargo xtask fuzz`) runs more.

use libfabric::sys::enums::Errno;
use libfabric::{
    getinfo, strerror, AddrFormat, AddressVector, AvInsertFlags, AvType, Bindings, Caps, CompletionQueue, CqConfig,
    Domain, Endpoint, EpType, Fabric, Hints, RemoteMemory, TaggedEntry, Target, Unsync,
};
use libfabric_tests::Case;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// Providers with different kinds of address vectors: sockaddr (udp,
/// tcp;ofi_rxm, sockets) and names (shm, `FI_ADDR_STR`).
const PROVIDERS: &[(&str, EpType)] =
    &[("udp", EpType::DGRAM), ("tcp;ofi_rxm", EpType::RDM), ("sockets", EpType::RDM), ("shm", EpType::RDM)];

/// A node name that is an address on loopback, or malformed: never a name a
/// resolver would look up on the network.
fn loopback_node() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..=255, 0u8..=255, 0u16..=300).prop_map(|(a, b, c)| format!("127.{a}.{b}.{c}")),
        Just(String::new()),
        Just("127.0.0.1\0".to_string()),
        Just("::1".to_string()),
    ]
}

#[test]
fn address_vectors_refuse_or_take_any_bytes_never_crash() {
    for &(provider, ep_type) in PROVIDERS {
        let case = Case { provider, ep_type };
        let Some(info) = case.try_local_info(Caps::MSG) else {
            eprintln!("skipped {provider}: fi_getinfo does not offer it");
            continue;
        };
        let fabric = Fabric::open(&info).expect("fabric");
        let domain: Domain<Unsync> = Domain::open(&fabric, &info).expect("domain");
        let av = AddressVector::open(&domain, AvType::UNSPEC).expect("av");
        let cq: CompletionQueue<TaggedEntry, Unsync> =
            CompletionQueue::open(&domain, &CqConfig::default()).expect("cq");
        let ep = Endpoint::open(&domain, &info, Bindings { cq: &cq, av: Some(&av), eq: None, tx_cq: None })
            .expect("endpoint");
        let name = ep.name().expect("name");
        let addrlen = name.len();
        let strategy = (
            prop::collection::vec(any::<u8>(), 0..3 * addrlen.max(1) + 8),
            prop_oneof![Just(addrlen), 0..80usize],
            prop_oneof![Just(0u64), Just(AvInsertFlags::MORE.bits()), any::<u64>()],
            loopback_node(),
            "[0-9a-z\\x00]{0,8}",
        );
        runner()
            .run(&strategy, |(bytes, len, flags, node, service)| {
                // Mutated copies of a real address exercise the parsers past their first check.
                let mut near = name.clone();
                let n = near.len();
                for (i, b) in bytes.iter().enumerate().take(n) {
                    near[(i * 7) % n] ^= b & 0x0f;
                }
                for (input, len) in [(&bytes, len), (&near, addrlen)] {
                    if let Ok(handles) = av.insert(input, len, AvInsertFlags::from_bits_retain(flags)) {
                        for h in handles {
                            let _ = av.lookup(h);
                        }
                    }
                }
                let _ = av.straddr(&bytes);
                let _ = av.insert_service(&node, &service);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{provider}: {e}"));
        eprintln!("{provider}: address inputs checked");
    }
}

#[test]
fn remote_memory_descriptors_parse_only_their_own_form() {
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..64), |bytes| {
            let parsed = RemoteMemory::from_bytes(&bytes);
            prop_assert_eq!(parsed.is_some(), bytes.len() == 24);
            if let Some(remote) = parsed {
                prop_assert_eq!(remote.to_bytes().to_vec(), bytes);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn hints_of_any_shape_give_infos_or_errors() {
    let strategy = ("[a-z;_\\x00]{0,12}", "[a-z0-9_.\\x00]{0,12}", any::<u64>(), 0u32..8, 0u32..16, any::<u64>());
    runner()
        .run(&strategy, |(provider, domain, caps, ep_type, addr_format, mode)| {
            let hints = Hints::new().and_then(|h| h.provider(&provider)).and_then(|h| h.domain_name(&domain));
            let Ok(hints) = hints else {
                // Only a NUL inside a name is refused.
                prop_assert!(provider.contains('\0') || domain.contains('\0'));
                return Ok(());
            };
            let hints = hints
                .caps(Caps::from_bits_retain(caps))
                .ep_type(EpType::from_raw(ep_type))
                .addr_format(AddrFormat(addr_format))
                .mode(libfabric::sys::flags::Mode::from_bits_retain(mode));
            let _ = format!("{hints:?}");
            if let Ok(infos) = getinfo(&Target::default(), &hints) {
                for info in infos.iter().take(2) {
                    let _ = info.to_string();
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_error_number_or_enum_value_has_text() {
    runner()
        .run(&(any::<i32>(), any::<u32>()), |(errno, raw)| {
            let e = Errno::from_raw(errno);
            let texts = [
                format!("{e:?}"),
                strerror(e),
                format!("{:?}", EpType::from_raw(raw)),
                format!("{:?}", AddrFormat(raw)),
                format!("{:?}", Caps::from_bits_retain(u64::from(raw) << 20)),
            ];
            prop_assert!(texts.iter().all(|t| !t.is_empty()), "{:?}", texts);
            Ok(())
        })
        .unwrap();
}
