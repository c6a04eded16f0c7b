use super::*;
use crate::compose::syntax::ShortOrLong;

fn port(s: &str) -> ShortOrLong<LongPort> {
    ShortOrLong::Short(s.to_string())
}

#[test]
fn keyed_lists_replace_their_match_and_keep_order() {
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&["8080:80"], &["8080:81"], &["8080:81"]),
        (
            &["8080:80", "9090:90"],
            &["7070:70"],
            &["8080:80", "9090:90", "7070:70"],
        ),
        (&["80", "90"], &["80"], &["80", "90"]),
        (&["127.0.0.1:8080:80/udp"], &["8080:82"], &["8080:82"]),
    ];
    for (base, over, want) in cases {
        let merged = keyed(
            base.iter().map(|s| port(s)).collect(),
            over.iter().map(|s| port(s)).collect(),
            port_key,
        );
        let want: Vec<_> = want.iter().map(|s| port(s)).collect();
        assert_eq!(merged, want, "{base:?} + {over:?}");
    }
}

#[test]
fn volumes_are_keyed_by_target() {
    let v = |s: &str| ShortOrLong::<LongVolume>::Short(s.to_string());
    let merged = keyed(
        vec![v("a:/data"), v("/cache")],
        vec![v("b:/data:ro")],
        volume_key,
    );
    assert_eq!(merged, vec![v("b:/data:ro"), v("/cache")]);
}
