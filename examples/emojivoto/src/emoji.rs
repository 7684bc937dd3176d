//! The emoji service: a fixed catalog of emojis, served over gRPC.

use tonic::{Request, Response, Status};

use crate::proto::emoji_service_server::{EmojiService, EmojiServiceServer};
use crate::proto::{
    Emoji, FindByShortcodeRequest, FindByShortcodeResponse, ListAllEmojiRequest,
    ListAllEmojiResponse,
};

/// Every emoji one can vote for, as (unicode, shortcode), in display order.
pub const CATALOG: &[(&str, &str)] = &[
    ("👻", ":ghost:"),
    ("🎱", ":8ball:"),
    ("💥", ":boom:"),
    ("😺", ":cat:"),
    ("🍩", ":doughnut:"),
    ("😂", ":joy:"),
    ("🏈", ":football:"),
    ("🦄", ":unicorn:"),
    ("🌮", ":taco:"),
    ("🐳", ":whale:"),
    ("🐶", ":dog:"),
    ("🚀", ":rocket:"),
    ("🍕", ":pizza:"),
    ("🤖", ":robot:"),
    ("🌈", ":rainbow:"),
    ("🔥", ":fire:"),
    ("🎉", ":tada:"),
    ("🐙", ":octopus:"),
    ("🦀", ":crab:"),
    ("🍺", ":beer:"),
    ("☕", ":coffee:"),
    ("🌵", ":cactus:"),
    ("🐧", ":penguin:"),
    ("🎸", ":guitar:"),
    ("🍔", ":hamburger:"),
    ("🥑", ":avocado:"),
    ("🐢", ":turtle:"),
    ("😎", ":sunglasses:"),
    ("🤔", ":thinking:"),
    ("💯", ":100:"),
];

/// The gRPC `emojivoto.v1.EmojiService`, backed by [`CATALOG`].
#[derive(Debug, Default, Clone)]
pub struct EmojiCatalog;

impl EmojiCatalog {
    /// The catalog as a tonic service, ready for a server's router.
    pub fn into_server(self) -> EmojiServiceServer<Self> {
        EmojiServiceServer::new(self)
    }
}

fn emoji((unicode, shortcode): (&str, &str)) -> Emoji {
    Emoji {
        unicode: unicode.to_string(),
        shortcode: shortcode.to_string(),
    }
}

#[tonic::async_trait]
impl EmojiService for EmojiCatalog {
    async fn list_all(
        &self,
        _: Request<ListAllEmojiRequest>,
    ) -> Result<Response<ListAllEmojiResponse>, Status> {
        let list = CATALOG.iter().copied().map(emoji).collect();
        Ok(Response::new(ListAllEmojiResponse { list }))
    }

    async fn find_by_shortcode(
        &self,
        request: Request<FindByShortcodeRequest>,
    ) -> Result<Response<FindByShortcodeResponse>, Status> {
        let shortcode = request.into_inner().shortcode;
        match CATALOG.iter().copied().find(|(_, code)| *code == shortcode) {
            Some(found) => Ok(Response::new(FindByShortcodeResponse {
                emoji: Some(emoji(found)),
            })),
            None => Err(Status::not_found(format!("no emoji {shortcode:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_unique_shortcodes_and_the_doughnut() {
        let mut codes: Vec<_> = CATALOG.iter().map(|(_, code)| *code).collect();
        assert!(codes.contains(&":doughnut:") && codes.contains(&":joy:"));
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), CATALOG.len());
        assert!(codes.iter().all(|c| c.starts_with(':') && c.ends_with(':')));
    }

    #[tokio::test]
    async fn unknown_shortcode_is_not_found() {
        let request = Request::new(FindByShortcodeRequest {
            shortcode: ":nope:".into(),
        });
        let err = EmojiCatalog.find_by_shortcode(request).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
}
