//! The public API's OpenAPI 3.1 document, generated from [`crate::http`]'s types: each
//! endpoint's path, its query's parameters (from the query struct), its answer's schema
//! (JSON, or JSON lines for a stream) and the errors every endpoint may answer. The
//! controller serves it at [`OpenApiQuery::PATH`]; `docs/openapi.json` is a copy that a
//! test keeps equal to it. Knows nothing about how the answers are computed.

use crate::http::{
    ApiError, EdgesQuery, Endpoint, IdentityQuery, NamespacesQuery, OpenApiQuery, Resource,
    RoutesQuery, Series, SeriesQuery, StatQuery, TapLine, TapQuery, TopQuery, Version,
    VersionQuery, Workloads, WorkloadsQuery, NDJSON, VERSION,
};
use std::collections::BTreeMap;
use utoipa::{
    openapi::{
        path::{HttpMethod, OperationBuilder, ParameterIn, PathItem},
        schema::{ArrayBuilder, ObjectBuilder, Schema},
        ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
        RefOr, ResponseBuilder,
    },
    IntoParams, PartialSchema, ToSchema,
};

/// The document, as the controller serves it.
pub fn document() -> OpenApi {
    let mut doc = Document::default();
    doc.add::<NamespacesQuery>();
    doc.add::<StatQuery>();
    doc.add::<SeriesQuery>();
    doc.add::<EdgesQuery>();
    doc.add::<RoutesQuery>();
    doc.add::<WorkloadsQuery>();
    doc.add::<TapQuery>();
    doc.add::<TopQuery>();
    doc.add::<IdentityQuery>();
    doc.add::<VersionQuery>();
    doc.add::<OpenApiQuery>();
    doc.finish()
}

/// The document as pretty JSON with a final newline: what `docs/openapi.json` holds.
/// Made once: it depends only on the types.
pub fn document_json() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut doc = serde_json::to_value(document()).unwrap_or_default();
        as_prose(&mut doc);
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    });
    &TEXT
}

/// Descriptions are the types' doc comments: read as one paragraph each, without rustdoc's
/// link brackets and without the `` `GET /path`: `` an endpoint's comment starts with.
fn as_prose(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "description" => {
                        let joined = text
                            .split('\n')
                            .map(str::trim)
                            .collect::<Vec<_>>()
                            .join(" ");
                        let joined = joined.replace("[`", "`").replace("`]", "`");
                        *text = match joined.strip_prefix("`GET ") {
                            Some(rest) => rest
                                .split_once("`: ")
                                .map(|(_, what)| capitalized(what))
                                .unwrap_or(joined.clone()),
                            None => joined,
                        };
                    }
                    _ => as_prose(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(as_prose),
        _ => {}
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The schema of a `resource` parameter: the names [`Resource::parse`] reads.
pub struct ResourceName;

impl PartialSchema for ResourceName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Resource::NAMES.iter().map(|(name, _)| *name)))
            .into()
    }
}

impl ToSchema for ResourceName {}

/// The named schemas an answer refers to.
type Components = BTreeMap<String, RefOr<Schema>>;

/// How an answer is described: a reference to its named schema, or a list of them.
pub trait AnswerSchema {
    /// Its schema, adding every named schema it needs to `components`.
    fn answer_schema(components: &mut Components) -> RefOr<Schema>;
}

/// A reference to `T`'s schema, which goes into `components` with those it refers to.
fn named<T: ToSchema>(components: &mut Components) -> RefOr<Schema> {
    let mut needed = Vec::new();
    T::schemas(&mut needed);
    components.extend(needed);
    components.insert(T::name().into_owned(), T::schema());
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

impl<T: ToSchema> AnswerSchema for Vec<T> {
    fn answer_schema(components: &mut Components) -> RefOr<Schema> {
        ArrayBuilder::new().items(named::<T>(components)).into()
    }
}

/// Answers that are one named object.
macro_rules! named_answers {
    ($($t:ty),*) => {$(
        impl AnswerSchema for $t {
            fn answer_schema(components: &mut Components) -> RefOr<Schema> {
                named::<$t>(components)
            }
        }
    )*};
}
named_answers!(Workloads, Series, TapLine, Version);

impl AnswerSchema for serde_json::Value {
    fn answer_schema(_: &mut Components) -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some("An OpenAPI 3.1 document."))
            .into()
    }
}

/// The document being built.
#[derive(Default)]
struct Document {
    paths: PathsBuilder,
    components: Components,
}

impl Document {
    /// Adds endpoint `E`: `GET E::PATH` with `E`'s parameters, answering `E::Answer`.
    fn add<E>(&mut self)
    where
        E: Endpoint + IntoParams + ToSchema,
        E::Answer: AnswerSchema,
    {
        let error = named::<ApiError>(&mut self.components);
        let answer = E::Answer::answer_schema(&mut self.components);
        let (content_type, what) = if E::STREAM {
            (NDJSON, "A stream of JSON lines, one of this schema each.")
        } else {
            ("application/json", "The answer.")
        };
        let ok = ResponseBuilder::new()
            .description(what)
            .content(
                content_type,
                ContentBuilder::new().schema(Some(answer)).build(),
            )
            .build();
        let refused = |why: &str| {
            ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(error.clone())).build(),
                )
                .build()
        };
        let name = E::PATH
            .trim_start_matches(crate::http::V1)
            .trim_start_matches('/');
        let operation = OperationBuilder::new()
            .operation_id(Some(name.trim_end_matches(".json")))
            .description(description::<E>())
            .parameters(Some(E::into_params(|| Some(ParameterIn::Query))))
            .response("200", ok)
            .response(
                "400",
                refused("A parameter is wrong: the message names it and what it accepts."),
            )
            .response(
                "404",
                refused("No such namespace or resource, or no such path."),
            )
            .build();
        self.paths = std::mem::take(&mut self.paths)
            .path(E::PATH, PathItem::new(HttpMethod::Get, operation));
    }

    fn finish(self) -> OpenApi {
        let mut components = ComponentsBuilder::new();
        for (name, schema) in self.components {
            components = components.schema(name, schema);
        }
        OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title("Conduit public API")
                    .version(VERSION)
                    .description(Some(
                        "What the CLI, the dashboard and other tools read of the mesh: golden \
                         metrics, their history, who calls whom, what discovery knows, live \
                         requests and proxies' identities. Locally it is served on the control \
                         plane's socket (only its owner may connect); on Kubernetes, through the \
                         API server as the aggregated API api.conduit.io, where RBAC decides. \
                         See docs/api.md.",
                    ))
                    .build(),
            )
            .paths(self.paths.build())
            .components(Some(components.build()))
            .build()
    }
}

/// The first paragraph of `T`'s doc comment, which says what the endpoint answers.
fn description<T: PartialSchema>() -> Option<String> {
    match T::schema() {
        RefOr::T(Schema::Object(object)) => object.description,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json`, the copy people and tools read without running a controller.
    const DOCS_COPY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

    #[test]
    fn the_copy_in_docs_is_the_document_the_controller_serves() {
        let current = document_json();
        if std::env::var_os("CONDUIT_UPDATE_OPENAPI").is_some() {
            std::fs::write(DOCS_COPY, current).unwrap();
        }
        let copy = std::fs::read_to_string(DOCS_COPY).unwrap_or_default();
        assert!(
            copy == current,
            "docs/openapi.json differs from the document the API's types make: after changing \
             them, run `CONDUIT_UPDATE_OPENAPI=1 cargo test -p conduit-api --features openapi \
             openapi` and commit docs/openapi.json"
        );
    }

    #[test]
    fn every_endpoint_is_documented_with_its_parameters_and_errors() {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let documented: Vec<&String> = paths.keys().collect();
        let mut served: Vec<String> = crate::http::ENDPOINTS
            .iter()
            .map(|(path, _)| path.to_string())
            .collect();
        served.sort();
        let mut documented: Vec<String> = documented.into_iter().cloned().collect();
        documented.sort();
        assert_eq!(documented, served);
        let stat = &paths[StatQuery::PATH]["get"];
        assert!(stat["description"]
            .as_str()
            .unwrap()
            .starts_with("Golden metrics per namespace"));
        assert_eq!(stat["parameters"][0]["schema"]["enum"][0], "deploy");
        let params: Vec<&str> = stat["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, ["resource", "window", "namespace", "name"]);
        assert_eq!(
            stat["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"],
            "#/components/schemas/StatRow"
        );
        assert_eq!(
            stat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ApiError"
        );
        let tap = &paths[TapQuery::PATH]["get"]["responses"]["200"]["content"];
        assert_eq!(
            tap[NDJSON]["schema"]["$ref"],
            "#/components/schemas/TapLine"
        );
        // Nested types are there too, and nullable fields say so.
        let schemas = &doc["components"]["schemas"];
        assert!(schemas["ServiceEndpoint"].is_object());
        assert!(schemas["ProxyIdentity"].is_object());
        assert_eq!(
            schemas["StatRow"]["properties"]["success_rate"]["type"],
            serde_json::json!(["number", "null"])
        );
    }
}
