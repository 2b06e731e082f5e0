//! The scenario file format: parsing a `.scn` file into inputs and directives.

use super::*;

// ---------------------------------------------------------------------------------------
// Parsing

#[derive(Debug, Clone)]
pub(super) enum IncRef {
    Open,
    Last,
    Id(String),
}

#[derive(Debug, Clone)]
pub(super) enum Action {
    Event {
        points: Vec<u64>,
        kind: EventKind,
        seq: u32,
        repeat: u32,
        via: Vec<String>,
        battery: u32,
        value: f32,
    },
    Command {
        house: u32,
        incident: IncRef,
        cmd: Command,
        operator: String,
    },
    Gateway {
        id: String,
        up: bool,
    },
    Tick,
    Restart {
        resume_ms: i64,
    },
    End,
}

#[derive(Debug, Clone)]
pub(super) struct Input {
    pub(super) at_ms: i64,
    pub(super) line: usize,
    pub(super) action: Action,
}

pub(super) struct Scenario {
    pub(super) name: String,
    pub(super) text: String,
    pub(super) config: PipelineConfig,
    pub(super) show: BTreeSet<&'static str>,
    pub(super) hide: BTreeSet<&'static str>,
    pub(super) inputs: Vec<Input>,
    pub(super) expected: Option<Vec<String>>,
    pub(super) hand_written: bool,
}

/// `30s`, `1.5s`, `500ms`, `2m`, `1h` → ms.
pub(super) fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("duration {s:?} has no unit"))?;
    let mult = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(format!("duration {s:?}: unknown unit {unit:?}")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: bad number"))?;
    Ok((v * mult).round() as i64)
}

pub(super) fn duration(s: &str) -> Result<Duration, String> {
    Ok(Duration::from_millis(parse_duration_ms(s)? as u64))
}

pub(super) fn apply_config(cfg: &mut PipelineConfig, kv: &str) -> Result<(), String> {
    let (key, value) = kv
        .split_once('=')
        .ok_or_else(|| format!("config {kv:?}: expected KEY=VALUE"))?;
    if let Some(class) = key.strip_prefix("device_class.") {
        let (hb, grace) = value
            .split_once('+')
            .ok_or_else(|| format!("config {key}: expected INTERVAL+GRACE"))?;
        cfg.device_classes.insert(
            class.to_string(),
            DeviceClassConfig {
                heartbeat_interval: duration(hb)?,
                grace: duration(grace)?,
            },
        );
        return Ok(());
    }
    if let Some(class) = key.strip_prefix("station_class.") {
        let parts: Vec<&str> = value.split('/').collect();
        let [ack, on_scene, handled] = parts[..] else {
            return Err(format!("config {key}: expected ACK/ON_SCENE/HANDLED"));
        };
        let d = cfg
            .station_classes
            .get_mut(class)
            .ok_or_else(|| format!("config {key}: unknown station class"))?;
        d.ack = duration(ack)?;
        d.on_scene = duration(on_scene)?;
        d.handled = duration(handled)?;
        return Ok(());
    }
    let d = duration(value)?;
    let field = match key {
        "dedup_window" => &mut cfg.dedup_window,
        "double_knock_window" => &mut cfg.double_knock_window,
        "realarm_window" => &mut cfg.realarm_window,
        "verification_timeout" => &mut cfg.verification_timeout,
        "nuisance_window" => &mut cfg.nuisance_window,
        "escalation_repeat" => &mut cfg.escalation_repeat,
        "risk_interval" => &mut cfg.risk_interval,
        "coverage_interval" => &mut cfg.coverage_interval,
        _ => return Err(format!("config: unknown key {key:?}")),
    };
    *field = d;
    Ok(())
}

pub(super) fn topic_name(name: &str) -> Result<&'static str, String> {
    Topic::from_name(name)
        .map(Topic::name)
        .ok_or_else(|| format!("unknown topic {name:?}"))
}

pub(super) fn kv_args(words: &[&str]) -> Result<HashMap<String, String>, String> {
    words
        .iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("expected key=value, got {w:?}"))
        })
        .collect()
}

pub(super) fn take<'a>(args: &'a HashMap<String, String>, key: &str) -> Result<&'a str, String> {
    args.get(key)
        .map(String::as_str)
        .ok_or_else(|| format!("missing {key}="))
}

pub(super) fn num<T: std::str::FromStr>(
    args: &HashMap<String, String>,
    key: &str,
) -> Result<T, String> {
    take(args, key)?
        .parse()
        .map_err(|_| format!("{key}= is not a number"))
}

pub(super) fn check_keys(args: &HashMap<String, String>, allowed: &[&str]) -> Result<(), String> {
    match args.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown argument {k}=")),
        None => Ok(()),
    }
}

pub(super) fn parse_action(words: &[&str]) -> Result<Action, String> {
    let Some((&verb, rest)) = words.split_first() else {
        return Err("missing action".into());
    };
    match verb {
        "event" => {
            let args = kv_args(rest)?;
            check_keys(
                &args,
                &["point", "kind", "seq", "repeat", "via", "battery", "value"],
            )?;
            let points = take(&args, "point")?
                .split(',')
                .map(|p| p.parse().map_err(|_| format!("bad point id {p:?}")))
                .collect::<Result<Vec<u64>, String>>()?;
            let kind_name = take(&args, "kind")?;
            let kind = EventKind::from_wire_name(kind_name)
                .ok_or_else(|| format!("unknown event kind {kind_name:?}"))?;
            Ok(Action::Event {
                points,
                kind,
                seq: num(&args, "seq")?,
                repeat: if args.contains_key("repeat") {
                    num(&args, "repeat")?
                } else {
                    1
                },
                via: args
                    .get("via")
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                battery: if args.contains_key("battery") {
                    num(&args, "battery")?
                } else {
                    0
                },
                value: if args.contains_key("value") {
                    num(&args, "value")?
                } else {
                    0.0
                },
            })
        }
        "command" => {
            let args = kv_args(rest)?;
            check_keys(&args, &["house", "incident", "kind", "operator"])?;
            let cmd = match take(&args, "kind")? {
                "ack" => Command::Ack,
                "on_scene" => Command::OnScene,
                "resolve" => Command::Resolve,
                "false_alarm" => Command::FalseAlarm,
                other => return Err(format!("unknown command kind {other:?}")),
            };
            let incident = match take(&args, "incident")? {
                "open" => IncRef::Open,
                "last" => IncRef::Last,
                id => IncRef::Id(id.to_string()),
            };
            Ok(Action::Command {
                house: num(&args, "house")?,
                incident,
                cmd,
                operator: args.get("operator").cloned().unwrap_or_default(),
            })
        }
        "gateway" => match rest {
            [id, "down"] => Ok(Action::Gateway {
                id: id.to_string(),
                up: false,
            }),
            [id, "up"] => Ok(Action::Gateway {
                id: id.to_string(),
                up: true,
            }),
            _ => Err("expected: gateway GW down|up".into()),
        },
        "tick" if rest.is_empty() => Ok(Action::Tick),
        "end" if rest.is_empty() => Ok(Action::End),
        "restart" => {
            let args = kv_args(rest)?;
            check_keys(&args, &["resume"])?;
            let resume = parse_duration_ms(take(&args, "resume")?)?;
            Ok(Action::Restart {
                resume_ms: T0 + resume,
            })
        }
        other => Err(format!("unknown action {other:?}")),
    }
}

pub(super) fn parse(name: &str, text: &str) -> Result<Scenario, String> {
    let mut sc = Scenario {
        name: name.to_string(),
        text: text.to_string(),
        config: PipelineConfig::default(),
        show: BTreeSet::new(),
        hide: BTreeSet::new(),
        inputs: Vec::new(),
        expected: None,
        hand_written: false,
    };
    let mut last_ms = T0;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |e: String| format!("{name}.scn line {line_no}: {e}");
        if raw.trim_end() == SEPARATOR {
            let rest: Vec<String> = text
                .lines()
                .skip(line_no)
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            sc.expected = Some(rest);
            break;
        }
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "config" => {
                if !sc.inputs.is_empty() {
                    return Err(err("config must come before the first input".into()));
                }
                for kv in &words[1..] {
                    apply_config(&mut sc.config, kv).map_err(err)?;
                }
            }
            "golden" if words[1..] == ["hand-written"] => sc.hand_written = true,
            "show" => {
                for t in &words[1..] {
                    sc.show.insert(topic_name(t).map_err(err)?);
                }
            }
            "hide" => {
                for t in &words[1..] {
                    sc.hide.insert(topic_name(t).map_err(err)?);
                }
            }
            w if w.starts_with('@') => {
                let at_ms = T0 + parse_duration_ms(&w[1..]).map_err(err)?;
                if at_ms < last_ms {
                    return Err(err("inputs must be in time order".into()));
                }
                last_ms = at_ms;
                let action = parse_action(&words[1..]).map_err(err)?;
                sc.inputs.push(Input {
                    at_ms,
                    line: line_no,
                    action,
                });
            }
            other => return Err(err(format!("unknown directive {other:?}"))),
        }
    }
    Ok(sc)
}
