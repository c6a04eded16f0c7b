use super::*;

#[test]
fn substitution_follows_docker_stack_deploy() {
    let env: HashMap<String, String> = [("TAG", "1.2"), ("EMPTY", ""), ("NAME", "web")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("plain", Ok("plain")),
        ("img:${TAG}", Ok("img:1.2")),
        ("img:$TAG", Ok("img:1.2")),
        ("$NAME-x", Ok("web-x")),
        ("${UNSET}", Ok("")),
        ("${UNSET:-d}", Ok("d")),
        ("${EMPTY:-d}", Ok("d")),
        ("${EMPTY-d}", Ok("")),
        ("${UNSET-d}", Ok("d")),
        ("${TAG:-d}", Ok("1.2")),
        ("${TAG:?must}", Ok("1.2")),
        ("${EMPTY?set}", Ok("")),
        ("cost $$5 and $${TAG}", Ok("cost $5 and ${TAG}")),
        (
            "${UNSET:?give a tag}",
            Err("required variable UNSET is missing a value: give a tag"),
        ),
        (
            "${EMPTY:?empty}",
            Err("required variable EMPTY is missing a value: empty"),
        ),
        (
            "${UNSET?x}",
            Err("required variable UNSET is missing a value: x"),
        ),
        (
            "${",
            Err("invalid interpolation format \"${\": you may need to escape any $ with another $"),
        ),
        (
            "a $ b",
            Err(
                "invalid interpolation format \"a $ b\": you may need to escape any $ with another $",
            ),
        ),
        (
            "${1X}",
            Err(
                "invalid interpolation format \"${1X}\": you may need to escape any $ with another $",
            ),
        ),
    ];
    for (template, want) in cases {
        let got = substitute(template, &env);
        assert_eq!(got.as_deref().map_err(String::as_str), *want, "{template}");
    }
}

#[test]
fn substituted_values_are_cast_where_the_format_wants_numbers_or_booleans() {
    let env: HashMap<String, String> = [("N", "3"), ("T", "true"), ("P", "8080")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut value: Value = serde_yaml::from_str(
        "services:\n  web:\n    image: x:$N\n    deploy: {replicas: $N}\n    ports: [{target: 80, published: $P}]\nnetworks:\n  n: {external: $T}\n",
    )
    .expect("yaml");
    interpolate(&mut value, &env, &mut Vec::new()).expect("interpolates");
    let web = &value["services"]["web"];
    assert_eq!(web["image"], Value::from("x:3"), "an image stays a string");
    assert_eq!(web["deploy"]["replicas"], Value::from(3));
    assert_eq!(web["ports"][0]["published"], Value::from(8080));
    assert_eq!(value["networks"]["n"]["external"], Value::Bool(true));
}

#[test]
fn an_error_names_the_key_path() {
    let mut value: Value =
        serde_yaml::from_str("services:\n  web:\n    ports: [\"${P:?no port}\"]\n").expect("yaml");
    let err = interpolate(&mut value, &HashMap::new(), &mut Vec::new()).expect_err("missing");
    assert_eq!(err.path, "services.web.ports[0]");
    assert_eq!(
        err.message,
        "required variable P is missing a value: no port"
    );
}
