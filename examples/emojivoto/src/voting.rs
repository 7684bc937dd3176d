//! The voting service: an in-memory tally of votes per shortcode, served over gRPC.
//! It trusts the caller to vote only for known emojis; the web checks that first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};

use crate::proto::voting_service_server::{VotingService, VotingServiceServer};
use crate::proto::{ResultsRequest, ResultsResponse, VoteRequest, VoteResponse, VotingResult};

/// The shortcode whose votes always fail, so the mesh has a failure to show.
pub const BROKEN_SHORTCODE: &str = ":doughnut:";

/// The gRPC `emojivoto.v1.VotingService`: counts votes in memory.
#[derive(Debug, Default, Clone)]
pub struct BallotBox {
    tally: Arc<Mutex<HashMap<String, u64>>>,
}

impl BallotBox {
    /// The ballot box as a tonic service, ready for a server's router.
    pub fn into_server(self) -> VotingServiceServer<Self> {
        VotingServiceServer::new(self)
    }
}

/// Turns a tally into results, most votes first, ties by shortcode.
pub fn leaderboard(tally: &HashMap<String, u64>) -> Vec<VotingResult> {
    let mut results: Vec<VotingResult> = tally
        .iter()
        .map(|(shortcode, votes)| VotingResult {
            shortcode: shortcode.clone(),
            votes: *votes,
        })
        .collect();
    results.sort_by(|a, b| b.votes.cmp(&a.votes).then(a.shortcode.cmp(&b.shortcode)));
    results
}

#[tonic::async_trait]
impl VotingService for BallotBox {
    async fn vote(&self, request: Request<VoteRequest>) -> Result<Response<VoteResponse>, Status> {
        let shortcode = request.into_inner().shortcode;
        if shortcode == BROKEN_SHORTCODE {
            return Err(Status::unknown("ERROR"));
        }
        let mut tally = self
            .tally
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        *tally.entry(shortcode).or_default() += 1;
        Ok(Response::new(VoteResponse {}))
    }

    async fn results(
        &self,
        _: Request<ResultsRequest>,
    ) -> Result<Response<ResultsResponse>, Status> {
        let tally = self
            .tally
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        let results = leaderboard(&tally);
        Ok(Response::new(ResultsResponse { results }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaderboard_is_most_votes_first_then_by_name() {
        let tally = HashMap::from([
            (":cat:".to_string(), 2),
            (":joy:".to_string(), 5),
            (":boom:".to_string(), 2),
        ]);
        let order: Vec<_> = leaderboard(&tally)
            .into_iter()
            .map(|r| (r.shortcode, r.votes))
            .collect();
        assert_eq!(
            order,
            [
                (":joy:".into(), 5),
                (":boom:".into(), 2),
                (":cat:".into(), 2)
            ]
        );
    }

    #[tokio::test]
    async fn votes_count_and_the_doughnut_fails() {
        let ballot = BallotBox::default();
        let vote = |code: &str| {
            Request::new(VoteRequest {
                shortcode: code.into(),
            })
        };
        ballot.vote(vote(":joy:")).await.unwrap();
        ballot.vote(vote(":joy:")).await.unwrap();
        let err = ballot.vote(vote(BROKEN_SHORTCODE)).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (tonic::Code::Unknown, "ERROR"));
        let results = ballot.results(Request::new(ResultsRequest {})).await;
        let results = results.unwrap().into_inner().results;
        assert_eq!(results.len(), 1);
        assert_eq!(
            (results[0].shortcode.as_str(), results[0].votes),
            (":joy:", 2)
        );
    }
}
