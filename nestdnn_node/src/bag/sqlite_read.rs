//! sqlite3 storage files (`.db3`, Humble's default): tables `topics(id, name, type,
//! serialization_format[, offered_qos_profiles, ...])` and `messages(id, topic_id, timestamp,
//! data)`; newer versions add `schema`, `metadata` and `message_definitions`, not needed here.
//!
//! Messages are read in pages ordered by `(timestamp, id)` (rosbag2 indexes `timestamp`), so
//! memory stays at one page whatever the file size.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use super::{BagError, Probe, RawMessage, TopicInfo};

const PAGE: i64 = 256;

fn sql_err(path: &Path, context: &str) -> impl FnOnce(rusqlite::Error) -> BagError {
    let path = path.to_path_buf();
    let context = context.to_owned();
    move |e| BagError::Sqlite {
        path,
        context,
        reason: e.to_string(),
    }
}

fn connect(path: &Path) -> Result<Connection, BagError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(path, "open"))?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(sql_err(path, "list tables"))?;
    for table in ["topics", "messages"] {
        if !tables.iter().any(|t| t == table) {
            return Err(BagError::MissingTable {
                path: path.to_path_buf(),
                table,
            });
        }
    }
    Ok(conn)
}

fn read_topics(path: &Path, conn: &Connection) -> Result<HashMap<i64, TopicInfo>, BagError> {
    let cols: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('topics')")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(sql_err(path, "read topics columns"))?;
    let qos = if cols.iter().any(|c| c == "offered_qos_profiles") {
        "offered_qos_profiles"
    } else {
        "''"
    };
    let sql = format!("SELECT id, name, type, serialization_format, {qos} FROM topics");
    let mut st = conn.prepare(&sql).map_err(sql_err(path, "read topics"))?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                TopicInfo {
                    name: r.get(1)?,
                    type_name: r.get(2)?,
                    serialization_format: r.get(3)?,
                    offered_qos_profiles: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    message_count: None,
                },
            ))
        })
        .and_then(|rows| rows.collect::<Result<HashMap<_, _>, _>>())
        .map_err(sql_err(path, "read topics"))?;
    Ok(rows)
}

pub(super) fn probe(path: &Path) -> Result<Probe, BagError> {
    let conn = connect(path)?;
    let mut topics = read_topics(path, &conn)?;
    let counts: Vec<(i64, i64)> = conn
        .prepare("SELECT topic_id, COUNT(*) FROM messages GROUP BY topic_id")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .map_err(sql_err(path, "count messages"))?;
    let mut total = 0u64;
    for (id, n) in counts {
        let n = u64::try_from(n).unwrap_or(0);
        total += n;
        if let Some(t) = topics.get_mut(&id) {
            t.message_count = Some(n);
        }
    }
    let mut list: Vec<(i64, TopicInfo)> = topics.into_iter().collect();
    list.sort_by_key(|(id, _)| *id);
    Ok(Probe {
        topics: list.into_iter().map(|(_, t)| t).collect(),
        message_count: Some(total),
        // SQLite pages carry no checksums; its own integrity checks are what there is.
        crc_checked: true,
        damaged: None,
    })
}

pub(super) fn stream(path: Arc<Path>) -> Result<SqliteMessages, BagError> {
    let conn = connect(&path)?;
    let topics = read_topics(&path, &conn)?
        .into_iter()
        .map(|(id, t)| (id, Arc::new(t)))
        .collect();
    Ok(SqliteMessages {
        path,
        conn,
        topics,
        after: None,
        page: VecDeque::new(),
        done: false,
    })
}

pub(super) struct SqliteMessages {
    path: Arc<Path>,
    conn: Connection,
    topics: HashMap<i64, Arc<TopicInfo>>,
    /// Key of the last row read: (timestamp, id).
    after: Option<(i64, i64)>,
    page: VecDeque<Result<RawMessage, BagError>>,
    done: bool,
}

// rusqlite's Connection is Send; the iterator is used from one thread at a time.
impl SqliteMessages {
    fn fetch(&mut self) -> Result<(), BagError> {
        let (ts, id) = self.after.unwrap_or((i64::MIN, i64::MIN));
        let path = self.path.clone();
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, topic_id, timestamp, data FROM messages \
                 WHERE timestamp > ?1 OR (timestamp = ?1 AND id > ?2) \
                 ORDER BY timestamp, id LIMIT ?3",
            )
            .map_err(sql_err(&path, "read messages"))?;
        let rows = st
            .query_map(rusqlite::params![ts, id, PAGE], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql_err(
                &path,
                &format!("read messages after timestamp {ts}"),
            ))?;
        if rows.is_empty() {
            self.done = true;
        }
        for (id, topic_id, ts, data) in rows {
            self.after = Some((ts, id));
            let item = match (self.topics.get(&topic_id), data) {
                (Some(topic), Some(data)) => Ok(RawMessage {
                    topic: topic.clone(),
                    timestamp_ns: u64::try_from(ts).unwrap_or(0),
                    data,
                    file: path.clone(),
                }),
                (None, _) => Err(BagError::Sqlite {
                    path: path.to_path_buf(),
                    context: format!("message id {id} at timestamp {ts}"),
                    reason: format!("topic_id {topic_id} is not in the topics table"),
                }),
                (Some(topic), None) => Err(BagError::Sqlite {
                    path: path.to_path_buf(),
                    context: format!("message id {id} on {} at timestamp {ts}", topic.name),
                    reason: "data is NULL".into(),
                }),
            };
            self.page.push_back(item);
        }
        Ok(())
    }
}

impl Iterator for SqliteMessages {
    type Item = Result<RawMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.page.pop_front()
    }
}
