//! `ping`, `endSessions`, and the generic `RunCommand`.

use brook_wire::SharedDoc;
use bson::{Bson, Document};

use crate::error::{CommandError, check_ok_shared};
use crate::{Command, CommandBody, Reply, with_db};

/// `{ping: 1, $db}`: checks that the server answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ping;

impl Ping {
    /// A ping.
    pub fn new() -> Self {
        Ping
    }
}

impl Command for Ping {
    const NAME: &'static str = "ping";
    type Output = ();

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        body.insert(Self::NAME, 1);
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<(), CommandError> {
        check_ok_shared(Self::NAME, &reply.body)
    }
}

/// `{endSessions: [lsid, ...], $db}`: tells the server the client is done with these
/// server sessions. Run it on `admin`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndSessions {
    /// The sessions' ids (`{id: UUID}` documents), 1 to [`EndSessions::MAX_IDS`] of them.
    pub ids: Vec<Document>,
}

impl EndSessions {
    /// The most session ids one `endSessions` may carry (per the sessions specification).
    pub const MAX_IDS: usize = 10_000;

    /// Ends the given sessions.
    pub fn new(ids: Vec<Document>) -> Self {
        EndSessions { ids }
    }
}

impl Command for EndSessions {
    const NAME: &'static str = "endSessions";
    type Output = ();

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        if self.ids.is_empty() {
            return Err(CommandError::Invalid(
                "endSessions needs at least one session id".to_owned(),
            ));
        }
        if self.ids.len() > Self::MAX_IDS {
            return Err(CommandError::Invalid(format!(
                "endSessions takes at most {} session ids, got {}",
                Self::MAX_IDS,
                self.ids.len()
            )));
        }
        let ids: Vec<Bson> = self.ids.iter().cloned().map(Bson::Document).collect();
        let mut body = Document::new();
        body.insert(Self::NAME, ids);
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<(), CommandError> {
        check_ok_shared(Self::NAME, &reply.body)
    }
}

/// A user's own command document, sent as it is but for `$db`.
///
/// The user's document is never mutated: `build` works on a copy. `$db` is set on that
/// copy to the database the command is run on, as the Run Command specification
/// requires; **if the user's document already has a `$db`, its value is replaced in
/// place** (keeping its position) rather than sent twice, which the server would
/// reject. The command's name is whatever the document's first key is.
///
/// The output is the whole reply body (sharing the reply buffer) once `ok` is checked:
/// an `ok: 0` reply is [`CommandError::Server`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunCommand {
    /// The user's command document.
    pub body: Document,
}

impl RunCommand {
    /// Runs `body`.
    pub fn new(body: Document) -> Self {
        RunCommand { body }
    }
}

impl Command for RunCommand {
    /// Not a server command name: the name used in errors about the reply.
    const NAME: &'static str = "runCommand";
    type Output = SharedDoc;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        if self.body.is_empty() {
            return Err(CommandError::Invalid(
                "runCommand needs a non-empty command document".to_owned(),
            ));
        }
        Ok(with_db(self.body.clone(), db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<SharedDoc, CommandError> {
        check_ok_shared(Self::NAME, &reply.body)?;
        Ok(reply.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn reply(doc: Document) -> Reply {
        Reply::from_document(&doc).unwrap()
    }

    #[test]
    fn ping_body_and_reply() {
        let body = Ping::new().build("admin").unwrap();
        assert_eq!(body.body, doc! { "ping": 1, "$db": "admin" });
        assert!(body.sequences.is_empty());
        Ping.handle_reply(reply(doc! { "ok": 1.0 })).unwrap();
        let err = Ping
            .handle_reply(reply(doc! { "ok": 0.0, "errmsg": "no", "code": 13 }))
            .unwrap_err();
        assert_eq!(err.code(), Some(13));
    }

    #[test]
    fn end_sessions_body() {
        let id = doc! { "id": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![7; 16] } };
        let cmd = EndSessions::new(vec![id.clone()]);
        let body = cmd.build("admin").unwrap();
        assert_eq!(body.body, doc! { "endSessions": [id], "$db": "admin" });
        cmd.handle_reply(reply(doc! { "ok": 1 })).unwrap();
    }

    #[test]
    fn end_sessions_rejects_empty_and_oversized() {
        assert!(matches!(
            EndSessions::new(vec![]).build("admin"),
            Err(CommandError::Invalid(_))
        ));
        let many = vec![doc! {}; EndSessions::MAX_IDS + 1];
        assert!(matches!(
            EndSessions::new(many).build("admin"),
            Err(CommandError::Invalid(_))
        ));
    }

    #[test]
    fn run_command_adds_db_to_a_copy() {
        let user = doc! { "count": "coll", "query": { "a": 1 } };
        let cmd = RunCommand::new(user.clone());
        let body = cmd.build("app").unwrap();
        assert_eq!(
            body.body,
            doc! { "count": "coll", "query": { "a": 1 }, "$db": "app" }
        );
        assert_eq!(cmd.body, user, "the user's document is unchanged");
        assert_eq!(body.command_name(), Some("count"));
    }

    #[test]
    fn run_command_replaces_an_existing_db_in_place() {
        let user = doc! { "ping": 1, "$db": "other", "comment": "x" };
        let cmd = RunCommand::new(user.clone());
        let body = cmd.build("app").unwrap();
        assert_eq!(body.body, doc! { "ping": 1, "$db": "app", "comment": "x" });
        assert_eq!(cmd.body, user);
    }

    #[test]
    fn run_command_rejects_an_empty_document() {
        assert!(matches!(
            RunCommand::new(doc! {}).build("app"),
            Err(CommandError::Invalid(_))
        ));
    }

    #[test]
    fn run_command_returns_the_reply_body() {
        let r = reply(doc! { "n": 3, "ok": 1.0 });
        let start = r.body.bytes().as_ptr();
        let out = RunCommand::new(doc! { "count": "c" })
            .handle_reply(r)
            .unwrap();
        assert_eq!(out.bytes().as_ptr(), start, "no copy");
        assert_eq!(out.to_document().unwrap(), doc! { "n": 3, "ok": 1.0 });
        let err = RunCommand::new(doc! { "count": "c" })
            .handle_reply(reply(doc! { "ok": 0, "errmsg": "bad" }))
            .unwrap_err();
        assert_eq!(err.server_error().unwrap().message, "bad");
    }
}
