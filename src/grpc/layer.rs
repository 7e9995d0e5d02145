//! [`GrpcAuthLayer`], and `.grpc()` on the bearer layers that makes one.

use tower_layer::Layer;

use super::GrpcAuth;
use crate::{BearerAuthLayer, KeyedBearerAuthLayer};

impl BearerAuthLayer {
    /// This layer, with gRPC's `UNAUTHENTICATED` handled like a `401`: see
    /// [`crate::grpc`].
    pub fn grpc(self) -> GrpcAuthLayer<Self> {
        GrpcAuthLayer { inner: self }
    }
}

impl<K> KeyedBearerAuthLayer<K> {
    /// This layer, with gRPC's `UNAUTHENTICATED` handled like a `401`: it
    /// evicts the rejected token from its own key. See [`crate::grpc`].
    pub fn grpc(self) -> GrpcAuthLayer<Self> {
        GrpcAuthLayer { inner: self }
    }
}

/// Layer that applies [`GrpcAuth`] around a bearer layer: built by
/// [`BearerAuthLayer::grpc`] or [`KeyedBearerAuthLayer::grpc`]. See the
/// [module docs](crate::grpc).
#[derive(Clone, Debug)]
pub struct GrpcAuthLayer<L> {
    inner: L,
}

impl<L> GrpcAuthLayer<L> {
    /// The bearer layer inside.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }
}

impl<S, L: Layer<S>> Layer<S> for GrpcAuthLayer<L> {
    type Service = GrpcAuth<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth::new(self.inner.layer(inner))
    }
}
