//! Middleware as two plain functions: one before the service it wraps, one
//! after.
//!
//! axum's `from_fn` runs an `async fn` around the rest of the stack. To do
//! so it moves a clone of every service below it into the function's
//! future and boxes that future, for every request: one clone of the whole
//! stack beneath, down to the boxed route at the bottom, per `from_fn`
//! layer in the chain. Every middleware of this server does its work
//! synchronously before the request goes on and after the response comes
//! back, so an [`Around`] calls the service it wraps directly and wraps the
//! future that returns: nothing is cloned or boxed per request.

use std::convert::Infallible;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use tower::{Layer, Service};

/// A middleware; [`layer`] makes it a tower layer.
pub trait Around: Clone {
    /// What [`Around::before`] hands to [`Around::after`].
    type Carry;

    /// Runs before the request goes on. `Break` answers it here, without
    /// calling the services below.
    fn before(&self, req: &mut Request) -> ControlFlow<Response, Self::Carry>;

    /// Runs on the response the services below gave; not on an answer
    /// from [`Around::before`]. If the request is abandoned before that
    /// (the client went away), `carry` is dropped instead.
    fn after(carry: Self::Carry, response: Response) -> Response {
        drop(carry);
        response
    }
}

/// `around` as a tower layer.
pub fn layer<A: Around>(around: A) -> AroundLayer<A> {
    AroundLayer(around)
}

#[derive(Clone, Debug)]
pub struct AroundLayer<A>(A);

impl<A: Around, S> Layer<S> for AroundLayer<A> {
    type Service = Wrapped<A, S>;

    fn layer(&self, inner: S) -> Wrapped<A, S> {
        Wrapped {
            around: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Wrapped<A, S> {
    around: A,
    inner: S,
}

impl<A, S, B> Service<Request> for Wrapped<A, S>
where
    A: Around,
    S: Service<Request, Response = axum::http::Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AroundFuture<A::Carry, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match self.around.before(&mut req) {
            ControlFlow::Continue(carry) => AroundFuture {
                inner: Some(self.inner.call(req)),
                carry: Some(carry),
                answered: None,
                after: A::after,
            },
            ControlFlow::Break(response) => AroundFuture {
                inner: None,
                carry: None,
                answered: Some(response),
                after: A::after,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of the services below, passed through
    /// [`Around::after`]; or the answer [`Around::before`] gave.
    pub struct AroundFuture<C, F> {
        #[pin]
        inner: Option<F>,
        carry: Option<C>,
        answered: Option<Response>,
        after: fn(C, Response) -> Response,
    }
}

impl<C, F, B> Future for AroundFuture<C, F>
where
    F: Future<Output = Result<axum::http::Response<B>, Infallible>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(response) = this.answered.take() {
            return Poll::Ready(Ok(response));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            // Polled again after it answered: nothing more will come.
            return Poll::Pending;
        };
        // `Body::new` boxes only a body that is not already a `Body`.
        let response = ready!(inner.poll(cx))?.map(Body::new);
        Poll::Ready(Ok(match this.carry.take() {
            Some(carry) => (this.after)(carry, response),
            // Polled again after the response: the inner future decides.
            None => response,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::StatusCode;
    use tower::{ServiceBuilder, ServiceExt as _};

    use super::*;

    /// Refuses requests to `/no`, counts what reaches the service below and
    /// marks every response it passes on.
    #[derive(Clone, Default)]
    struct Gate {
        calls: Arc<AtomicUsize>,
    }

    impl Around for Gate {
        type Carry = &'static str;

        fn before(&self, req: &mut Request) -> ControlFlow<Response, &'static str> {
            if req.uri().path() == "/no" {
                let mut refused = Response::new(Body::empty());
                *refused.status_mut() = StatusCode::FORBIDDEN;
                return ControlFlow::Break(refused);
            }
            self.calls.fetch_add(1, Ordering::SeqCst);
            ControlFlow::Continue("seen")
        }

        fn after(carry: &'static str, mut response: Response) -> Response {
            response
                .headers_mut()
                .insert("x-gate", carry.parse().unwrap());
            response
        }
    }

    async fn send(gate: &Gate, path: &str) -> Response {
        let service = ServiceBuilder::new().layer(layer(gate.clone())).service_fn(
            |req: Request| async move {
                Ok::<_, Infallible>(Response::new(Body::from(req.uri().path().to_owned())))
            },
        );
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        service.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn before_answers_or_passes_on_and_after_sees_the_response() {
        let gate = Gate::default();
        let passed = send(&gate, "/yes").await;
        assert_eq!(passed.status(), StatusCode::OK);
        assert_eq!(passed.headers()["x-gate"], "seen");
        let refused = send(&gate, "/no").await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(
            refused.headers().get("x-gate").is_none(),
            "after is not run"
        );
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    }
}
