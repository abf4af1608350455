//! A steady load of real requests against a URL while a test deploys: every answer sampled
//! with its time, status and body.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::support::helpers::client;

/// One request of the load: when it was sent and what came back.
pub(crate) struct Sample {
    pub(crate) sent: Instant,
    pub(crate) answer: Result<String, String>,
    /// How long the answer took.
    pub(crate) took: Duration,
}

/// Requests at a steady rate through the proxy until stopped.
pub(crate) struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
    started: Instant,
    ticker: tokio::task::JoinHandle<()>,
}

impl Load {
    pub(crate) fn start(url: String, per_second: u32) -> Load {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (s, st) = (samples.clone(), stop.clone());
        let ticker = tokio::spawn(async move {
            let client = client();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
            let mut requests = tokio::task::JoinSet::new();
            while !st.is_cancelled() {
                tick.tick().await;
                let (client, url, samples) = (client.clone(), url.clone(), s.clone());
                requests.spawn(async move {
                    let sent = Instant::now();
                    // A user's patience: a held request may wait seconds, not forever.
                    let answer = match client
                        .get(&url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => r.text().await.map_err(|e| e.to_string()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(format!("{e:#}: {:?}", std::error::Error::source(&e))),
                    };
                    let took = sent.elapsed();
                    samples.lock().unwrap().push(Sample { sent, answer, took });
                });
            }
            while requests.join_next().await.is_some() {}
        });
        Load {
            samples,
            stop,
            started: Instant::now(),
            ticker,
        }
    }

    /// Stop, wait for the requests in flight, and return every sample in sending order.
    pub(crate) async fn finish(self) -> (Vec<Sample>, Duration) {
        let elapsed = self.started.elapsed();
        self.stop.cancel();
        self.ticker.await.unwrap();
        let mut samples = std::mem::take(&mut *self.samples.lock().unwrap());
        samples.sort_by_key(|s| s.sent);
        (samples, elapsed)
    }
}
