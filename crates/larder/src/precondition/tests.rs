use super::*;
use crate::key::Key;
use proptest::prelude::*;
use std::time::Duration;

fn meta(etag: &str, modified_secs: u64) -> Meta {
    Meta {
        key: Key::new("k").unwrap(),
        etag: ETag::strong(etag).unwrap(),
        size: 0,
        last_modified: UNIX_EPOCH + Duration::from_millis(modified_secs * 1000 + 750),
        expires_at: None,
        content_type: None,
        metadata: Default::default(),
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn tags(list: &[&str]) -> ETagCondition {
    ETagCondition::Tags(list.iter().map(|t| ETag::parse(t).unwrap()).collect())
}

#[derive(Debug, PartialEq)]
enum R {
    Ok,
    E304,
    E412,
}

fn read(p: &Preconditions, m: &Meta) -> R {
    match p.evaluate_read(m) {
        Ok(()) => R::Ok,
        Err(Error::NotModified(got)) => {
            assert_eq!(*got, *m);
            R::E304
        }
        Err(Error::PreconditionFailed { current }) => {
            assert_eq!(current.as_deref(), Some(m));
            R::E412
        }
        Err(e) => panic!("{e}"),
    }
}

fn write(p: &Preconditions, m: Option<&Meta>) -> R {
    match p.evaluate_write(m) {
        Ok(()) => R::Ok,
        Err(Error::PreconditionFailed { current }) => {
            assert_eq!(current.as_deref(), m, "412 must carry the current object");
            R::E412
        }
        Err(e) => panic!("{e}"),
    }
}

/// Every branch of RFC 9110 13.2.2, for reads and writes, on an existing and a missing object.
#[test]
fn rfc9110_13_2_2_table() {
    let cur = meta("v1", 1000);
    let p = |im: Option<ETagCondition>,
             inm: Option<ETagCondition>,
             ims: Option<u64>,
             ius: Option<u64>| Preconditions {
        if_match: im,
        if_none_match: inm,
        if_modified_since: ims.map(at),
        if_unmodified_since: ius.map(at),
    };
    use R::*;
    #[rustfmt::skip]
    let cases: Vec<(&str, Preconditions, R, R, R)> = vec![
        // name, conditions, read of existing, write over existing, write where missing
        ("unconditional", p(None, None, None, None), Ok, Ok, Ok),
        // Step 1: If-Match, strong comparison.
        ("if-match same", p(Some(tags(&["\"v1\""])), None, None, None), Ok, Ok, E412),
        ("if-match other", p(Some(tags(&["\"v0\""])), None, None, None), E412, E412, E412),
        ("if-match list hit", p(Some(tags(&["\"v0\"", "\"v1\""])), None, None, None), Ok, Ok, E412),
        ("if-match weak never matches", p(Some(tags(&["W/\"v1\""])), None, None, None), E412, E412, E412),
        ("if-match star", p(Some(ETagCondition::Any), None, None, None), Ok, Ok, E412),
        // Step 2: If-Unmodified-Since, only without If-Match; ignored when nothing exists.
        ("ius later", p(None, None, None, Some(2000)), Ok, Ok, Ok),
        ("ius same second", p(None, None, None, Some(1000)), Ok, Ok, Ok),
        ("ius earlier", p(None, None, None, Some(999)), E412, E412, Ok),
        ("ius ignored under if-match", p(Some(tags(&["\"v1\""])), None, None, Some(1)), Ok, Ok, E412),
        // Step 3: If-None-Match, weak comparison; 304 for reads, 412 for writes.
        ("inm same", p(None, Some(tags(&["\"v1\""])), None, None), E304, E412, Ok),
        ("inm weak same", p(None, Some(tags(&["W/\"v1\""])), None, None), E304, E412, Ok),
        ("inm other", p(None, Some(tags(&["\"v0\""])), None, None), Ok, Ok, Ok),
        ("inm list hit", p(None, Some(tags(&["\"x\"", "W/\"v1\""])), None, None), E304, E412, Ok),
        ("inm star", p(None, Some(ETagCondition::Any), None, None), E304, E412, Ok),
        // Step 4: If-Modified-Since, reads only, only without If-None-Match.
        ("ims earlier", p(None, None, Some(999), None), Ok, Ok, Ok),
        ("ims same second", p(None, None, Some(1000), None), E304, Ok, Ok),
        ("ims later", p(None, None, Some(5000), None), E304, Ok, Ok),
        ("ims ignored under inm", p(None, Some(tags(&["\"v0\""])), Some(5000), None), Ok, Ok, Ok),
        // Order: a failed If-Match wins over a matching If-None-Match.
        ("412 before 304", p(Some(tags(&["\"v0\""])), Some(tags(&["\"v1\""])), None, None), E412, E412, E412),
        ("both pass", p(Some(tags(&["\"v1\""])), Some(tags(&["\"v0\""])), None, None), Ok, Ok, E412),
        ("ius fails before inm", p(None, Some(ETagCondition::Any), None, Some(10)), E412, E412, Ok),
    ];
    for (name, cond, r_existing, w_existing, w_missing) in cases {
        assert_eq!(read(&cond, &cur), r_existing, "{name}: read of existing");
        assert_eq!(
            write(&cond, Some(&cur)),
            w_existing,
            "{name}: write over existing"
        );
        assert_eq!(write(&cond, None), w_missing, "{name}: write where missing");
    }
}

#[test]
fn if_range() {
    let cur = meta("v1", 1000);
    assert!(IfRange::parse("\"v1\"").unwrap().holds(&cur));
    assert!(!IfRange::parse("W/\"v1\"").unwrap().holds(&cur));
    assert!(!IfRange::parse("\"v2\"").unwrap().holds(&cur));
    let date = httpdate::fmt_http_date(at(1000));
    assert!(IfRange::parse(&date).unwrap().holds(&cur));
    assert!(!IfRange::parse(&httpdate::fmt_http_date(at(1001)))
        .unwrap()
        .holds(&cur));
    assert!(IfRange::parse("yesterday").is_err());
}

#[test]
fn parses_lists_and_combines_fields() {
    assert_eq!(parse_etag_condition([]).unwrap(), None);
    assert_eq!(
        parse_etag_condition(["*"]).unwrap(),
        Some(ETagCondition::Any)
    );
    assert_eq!(
        parse_etag_condition([" * "]).unwrap(),
        Some(ETagCondition::Any)
    );
    assert_eq!(
        parse_etag_condition(["\"a\", W/\"b\"", "\"c\""]).unwrap(),
        Some(tags(&["\"a\"", "W/\"b\"", "\"c\""]))
    );
    // Commas inside the quotes belong to the tag.
    assert_eq!(
        parse_etag_condition(["\"a,b\" , ,\"c\""]).unwrap(),
        Some(tags(&["\"a,b\"", "\"c\""]))
    );
    for bad in [
        vec!["abc"],
        vec!["\"a\" \"b\""],
        vec!["\"a"],
        vec!["*, \"a\""],
        vec!["*", "\"a\""],
        vec![""],
        vec![" , "],
        vec!["W/abc"],
        vec!["\"a\"x"],
    ] {
        assert!(
            parse_etag_condition(bad.iter().copied()).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn dates_that_are_invalid_or_repeated_are_ignored() {
    let d = httpdate::fmt_http_date(at(1000));
    assert_eq!(parse_date_condition([d.as_str()]), Some(at(1000)));
    assert_eq!(parse_date_condition(["not a date"]), None);
    assert_eq!(parse_date_condition([d.as_str(), d.as_str()]), None);
    assert_eq!(parse_date_condition([]), None);
}

fn etag_strategy() -> impl Strategy<Value = ETag> {
    ("[!#-~]{0,6}", any::<bool>()).prop_map(|(o, weak)| {
        if weak {
            ETag::weak(o).unwrap()
        } else {
            ETag::strong(o).unwrap()
        }
    })
}

proptest! {
    /// Printing a list and parsing it back gives the same list, however it is split into fields.
    #[test]
    fn list_round_trips(list in prop::collection::vec(etag_strategy(), 1..6), split in 0usize..6) {
        let cond = ETagCondition::Tags(list.clone());
        let one = cond.to_string();
        prop_assert_eq!(parse_etag_condition([one.as_str()]).unwrap(), Some(cond.clone()));
        let split = split.min(list.len());
        let a = ETagCondition::Tags(list[..split].to_vec()).to_string();
        let b = ETagCondition::Tags(list[split..].to_vec()).to_string();
        prop_assert_eq!(parse_etag_condition([a.as_str(), b.as_str()]).unwrap(), Some(cond));
    }

    /// The parser never panics, whatever it is given.
    #[test]
    fn parser_never_panics(a in "\\PC{0,30}", b in "[\"W/*, a]{0,12}") {
        let _ = parse_etag_condition([a.as_str(), b.as_str()]);
    }

    /// If-Match with the current tag always passes; If-None-Match with it never does.
    #[test]
    fn own_tag_laws(tag in "[!#-~]{0,8}", others in prop::collection::vec(etag_strategy(), 0..4), secs in 0u64..10_000) {
        let cur = meta(&tag, secs);
        let mut list = others.clone();
        list.push(cur.etag.clone());
        let im = Preconditions { if_match: Some(ETagCondition::Tags(list.clone())), ..Default::default() };
        prop_assert!(im.evaluate_read(&cur).is_ok());
        prop_assert!(im.evaluate_write(Some(&cur)).is_ok());
        prop_assert!(im.evaluate_write(None).is_err());
        let inm = Preconditions { if_none_match: Some(ETagCondition::Tags(list)), ..Default::default() };
        let r = inm.evaluate_read(&cur);
        prop_assert!(matches!(r, Err(Error::NotModified(_))), "read: {:?}", r);
        let w = inm.evaluate_write(Some(&cur));
        prop_assert!(matches!(w, Err(Error::PreconditionFailed { .. })), "write: {:?}", w);
        prop_assert!(inm.evaluate_write(None).is_ok());
    }

    /// If-Match and If-None-Match with the same list can never both pass on an existing object.
    #[test]
    fn match_and_none_match_exclude(list in prop::collection::vec(etag_strategy(), 1..4), tag in "[a-c]{1}") {
        let cur = meta(&tag, 1);
        let cond = ETagCondition::Tags(list);
        let im = Preconditions { if_match: Some(cond.clone()), ..Default::default() };
        let inm = Preconditions { if_none_match: Some(cond), ..Default::default() };
        prop_assert!(!(im.evaluate_write(Some(&cur)).is_ok() && inm.evaluate_write(Some(&cur)).is_ok()));
    }
}
