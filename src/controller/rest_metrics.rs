//! `rest_client_requests_total{code,method,host}`, the Kubernetes API request counter
//! client-go exports and Flux's dashboards read: a tower layer on the kube clients that
//! counts every request by its HTTP status code (`<error>` when no answer came, as
//! client-go labels it), method and API server host.

use std::task::{Context, Poll};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub code: String,
    pub method: String,
    pub host: String,
}

/// The counter family, shared by every client.
#[derive(Clone, Default)]
pub struct RestClientMetrics {
    requests: Family<RequestLabels, Counter>,
}

impl RestClientMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rest_client_requests",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            self.requests.clone(),
        );
    }

    /// The layer for a kube client.
    pub fn layer(&self) -> RestMetricsLayer {
        RestMetricsLayer {
            metrics: self.clone(),
        }
    }

    fn count(&self, code: String, method: String, host: String) {
        self.requests
            .get_or_create(&RequestLabels { code, method, host })
            .inc();
    }
}

#[derive(Clone)]
pub struct RestMetricsLayer {
    metrics: RestClientMetrics,
}

impl<S> Layer<S> for RestMetricsLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

pub struct Counted<S> {
    inner: S,
    metrics: RestClientMetrics,
}

impl<S, B, R> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.method().as_str().to_string();
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let metrics = self.metrics.clone();
        self.inner
            .call(req)
            .map(move |result| {
                let code = match &result {
                    Ok(response) => response.status().as_u16().to_string(),
                    Err(_) => "<error>".to_string(),
                };
                metrics.count(code, method, host);
                result
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn every_request_is_counted_by_code_method_and_host() {
        let metrics = RestClientMetrics::default();
        let svc = tower::service_fn(|req: http::Request<()>| async move {
            let status = if req.uri().path() == "/missing" {
                404
            } else {
                200
            };
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .body(())
                    .expect("response"),
            )
        });
        let mut counted = metrics.layer().layer(svc);
        for path in ["/api", "/api", "/missing"] {
            let req = http::Request::get(format!("https://10.0.0.1:6443{path}"))
                .body(())
                .expect("request");
            counted
                .ready()
                .await
                .expect("ready")
                .call(req)
                .await
                .expect("call");
        }
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(
                r#"rest_client_requests_total{code="200",method="GET",host="10.0.0.1:6443"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"rest_client_requests_total{code="404",method="GET",host="10.0.0.1:6443"} 1"#
            ),
            "{text}"
        );
    }
}
