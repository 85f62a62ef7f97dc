//! TOML text to [`FileConfig`], keeping a key path on every serde error.
//!
//! The text is parsed into a `toml::Table` first (a syntax error stops here), then each
//! section and each array element is deserialized on its own, and after each serde error
//! the offending key is set aside and the rest tried again. So one mistake hides no other,
//! and every unknown key or wrong type is named by its full path
//! (`endpoint[is-1].scaling.max_wrokers`).

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::{Table, Value};

use super::Problem;
use super::file::FileConfig;
use super::validate::{element_label, path_key};

/// Top-level keys, in the order problems are reported.
const TOP_LEVEL: [&str; 10] = [
    "server",
    "listener",
    "object_store",
    "project",
    "security_group",
    "endpoint",
    "alert",
    "alerts",
    "smtp",
    "cluster",
];

/// What parsing left out of the [`FileConfig`], so that validation labels elements by their
/// position in the file and raises no second problem about a value already reported.
#[derive(Debug, Default)]
pub(crate) struct Origin {
    /// 1-based positions in the file of the kept `[[listener]]` elements.
    pub listener: Vec<usize>,
    /// Same for `[[project]]`.
    pub project: Vec<usize>,
    /// Same for `[[security_group]]`.
    pub security_group: Vec<usize>,
    /// Same for `[[endpoint]]`.
    pub endpoint: Vec<usize>,
    /// Same for `[[alert]]`.
    pub alert: Vec<usize>,
    /// Elements dropped by a parse error, as (array, id as written); references to them
    /// are not reported as unknown.
    pub dropped: Vec<(&'static str, String)>,
    /// Key paths whose value could not be parsed; validation problems under them are dropped.
    pub failed: Vec<String>,
    /// Key paths of every array element (`endpoint[is-1]`), in file order.
    pub elements: Vec<String>,
}

impl Origin {
    /// The position in the file of the `index`-th kept element of `positions`.
    pub fn position(positions: &[usize], index: usize) -> usize {
        positions.get(index).copied().unwrap_or(index + 1)
    }

    /// Whether an element with this id was dropped from `array`, or the whole array failed
    /// to parse: a reference to it is then not reported as unknown.
    pub fn may_exist(&self, array: &str, id: &str) -> bool {
        self.covers(array) || self.dropped.iter().any(|(a, i)| *a == array && i == id)
    }

    /// Whether any element of `array` was dropped, or the whole array failed to parse.
    pub fn lost_any(&self, array: &str) -> bool {
        self.covers(array) || self.dropped.iter().any(|(a, _)| *a == array)
    }

    /// Whether `path` is, or lies under, a value that failed to parse.
    pub fn covers(&self, path: &str) -> bool {
        self.failed.iter().any(|failed| under(path, failed))
    }

    /// Where a problem at `path` belongs in a report that follows the file: its section in
    /// DESIGN.md order, then its element's position.
    pub fn sort_key(&self, path: &str) -> (usize, usize) {
        let head = path.split(['.', '[']).next().unwrap_or("");
        let section = TOP_LEVEL
            .iter()
            .position(|key| *key == head)
            .map_or(0, |i| i + 1);
        let element = self
            .elements
            .iter()
            .position(|prefix| under(path, prefix))
            .unwrap_or(0);
        (section, element)
    }
}

/// The result of parsing: what could be read, and what could not.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// Every section and element that deserialized.
    pub file: FileConfig,
    /// What was left out.
    pub origin: Origin,
    /// Syntax, unknown-key and type problems.
    pub problems: Vec<Problem>,
}

/// Whether `path` is `prefix` or lies under it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Parses `text`; a syntax error yields `Err` with its one problem.
pub(crate) fn parse(text: &str) -> Result<Parsed, Problem> {
    let mut table: Table = text.parse().map_err(|err| syntax_problem(&err, text))?;
    let mut out = Parsed::default();

    let mut unknown: Vec<String> = table
        .keys()
        .filter(|key| !TOP_LEVEL.contains(&key.as_str()))
        .cloned()
        .collect();
    unknown.sort();
    for key in unknown {
        out.problems.push(Problem::new(
            path_key("", &key),
            format!(
                "unknown field `{key}`, expected one of {}",
                TOP_LEVEL.map(|k| format!("`{k}`")).join(", ")
            ),
        ));
    }

    if let Some(value) = table.remove("server")
        && let Some(server) = de(value, "server", &mut out)
    {
        out.file.server = server;
    }
    if let Some(value) = table.remove("object_store")
        && let Some(store) = de(value, "object_store", &mut out)
    {
        out.file.object_store = store;
    }
    if let Some(value) = table.remove("listener") {
        let (items, positions) = out.array(value, "listener", "name");
        out.file.listener = Some(items);
        out.origin.listener = positions;
    }
    if let Some(value) = table.remove("project") {
        let (items, positions) = out.array(value, "project", "id");
        out.file.project = items;
        out.origin.project = positions;
    }
    if let Some(value) = table.remove("security_group") {
        let (items, positions) = out.array(value, "security_group", "id");
        out.file.security_group = items;
        out.origin.security_group = positions;
    }
    if let Some(value) = table.remove("endpoint") {
        let (items, positions) = out.array(value, "endpoint", "id");
        out.file.endpoint = items;
        out.origin.endpoint = positions;
    }
    if let Some(value) = table.remove("alert") {
        let (items, positions) = out.array(value, "alert", "name");
        out.file.alert = items;
        out.origin.alert = positions;
    }
    if let Some(value) = table.remove("alerts")
        && let Some(alerts) = de(value, "alerts", &mut out)
    {
        out.file.alerts = alerts;
    }
    if let Some(value) = table.remove("smtp")
        && let Some(smtp) = de(value, "smtp", &mut out)
    {
        out.file.smtp = Some(smtp);
    }
    if let Some(value) = table.remove("cluster")
        && let Some(cluster) = de(value, "cluster", &mut out)
    {
        out.file.cluster = Some(cluster);
    }
    Ok(out)
}

impl Parsed {
    fn fail(&mut self, path: &str, problem: Problem) {
        self.origin.failed.push(path.to_string());
        self.problems.push(problem);
    }

    /// Deserializes each element of the array of tables `key` on its own, keeping the ones
    /// that parse and their 1-based positions. Elements are named by `id_key`.
    fn array<T: DeserializeOwned>(
        &mut self,
        value: Value,
        key: &'static str,
        id_key: &str,
    ) -> (Vec<T>, Vec<usize>) {
        let Value::Array(elements) = value else {
            self.fail(
                key,
                Problem::new(
                    key,
                    format!(
                        "must be an array of tables (write [[{key}]]), found {}",
                        describe(&value)
                    ),
                ),
            );
            return (Vec::new(), Vec::new());
        };
        let mut items = Vec::new();
        let mut positions = Vec::new();
        for (index, elem) in elements.into_iter().enumerate() {
            let position = index + 1;
            let Value::Table(elem) = elem else {
                let message = format!("must be a table, found {}", describe(&elem));
                let prefix = format!("{key}[#{position}]");
                self.origin.elements.push(prefix.clone());
                self.problems.push(Problem::new(prefix, message));
                self.origin.dropped.push((key, String::new()));
                continue;
            };
            let id = elem.get(id_key).and_then(Value::as_str).unwrap_or("");
            let id = id.to_string();
            let prefix = format!("{key}{}", element_label(&id, position));
            self.origin.elements.push(prefix.clone());
            match de(Value::Table(elem), &prefix, self) {
                Some(item) => {
                    items.push(item);
                    positions.push(position);
                }
                None => self.origin.dropped.push((key, id)),
            }
        }
        (items, positions)
    }
}

/// Deserializes `value` as a `T`, recording every serde error with its key path below
/// `prefix`. After each error the offending key is removed (its default stands in, and the
/// key is marked failed so validation says nothing more about it) and deserialization is
/// retried, so one wrong key does not hide the next. `None` when even that fails.
fn de<T: DeserializeOwned>(mut value: Value, prefix: &str, out: &mut Parsed) -> Option<T> {
    // Each retry removes a key, so this bound is never reached by a real file.
    for _ in 0..1000 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(item) => return Some(item),
            Err(err) => err,
        };
        let segments: Vec<&Segment> = err.path().iter().collect();
        let paths = render(prefix, &value, &segments);
        let full = paths.last().cloned().unwrap_or_else(|| prefix.to_string());
        let message = err.inner().message().to_string();
        // serde names a missing key in the message with the path at its table; name it in
        // the path instead, like every other problem.
        out.problems.push(match missing_field(&message) {
            Some(field) => Problem::new(path_key(&full, field), "is required"),
            None => Problem::new(full, message),
        });
        match remove(&mut value, &segments) {
            Some(depth) => out
                .origin
                .failed
                .push(paths.get(depth).cloned().unwrap_or_default()),
            None => {
                out.origin.failed.push(prefix.to_string());
                return None;
            }
        }
    }
    None
}

/// The key path after each of `segments` (`paths[0]` is `prefix`).
fn render(prefix: &str, raw: &Value, segments: &[&Segment]) -> Vec<String> {
    let mut paths = vec![prefix.to_string()];
    let mut path = prefix.to_string();
    let mut node = Some(raw);
    let mut parent_key = "";
    for segment in segments {
        match segment {
            Segment::Map { key } => {
                path = path_key(&path, key);
                node = node.and_then(|n| n.get(key.as_str()));
                parent_key = key;
            }
            Segment::Seq { index } => {
                let elem = node.and_then(|n| n.get(*index));
                path.push_str(&seq_label(parent_key, elem, *index));
                node = elem;
            }
            Segment::Enum { variant } => path = path_key(&path, variant),
            Segment::Unknown => path.push_str(".?"),
        }
        paths.push(path.clone());
    }
    paths
}

/// Removes the key `segments` lead to, or the whole list when they lead into a list, and
/// returns how many segments lead to what was removed; `None` when nothing can be removed.
fn remove(root: &mut Value, segments: &[&Segment]) -> Option<usize> {
    let mut depth = segments.len();
    while depth > 0 && matches!(segments[depth - 1], Segment::Seq { .. }) {
        depth -= 1;
    }
    let Segment::Map { key } = segments.get(depth.checked_sub(1)?)? else {
        return None;
    };
    let mut node = root;
    for segment in &segments[..depth - 1] {
        node = match segment {
            Segment::Map { key } => node.get_mut(key.as_str())?,
            Segment::Seq { index } => node.get_mut(*index)?,
            _ => return None,
        };
    }
    node.as_table_mut()?.remove(key.as_str())?;
    Some(depth)
}

/// Elements of `tokens` are named by their `name`; elements of plain lists by their index.
fn seq_label(array_key: &str, elem: Option<&Value>, index: usize) -> String {
    if array_key == "tokens" {
        let name = elem
            .and_then(|e| e.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        element_label(name, index + 1)
    } else {
        format!("[{index}]")
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// A syntax error, located by line and column.
fn syntax_problem(err: &toml::de::Error, text: &str) -> Problem {
    let path = match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}")
        }
        None => "<file>".to_string(),
    };
    Problem::new(path, format!("TOML syntax error: {}", err.message().trim()))
}
