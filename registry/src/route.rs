//! Where a request is going: which listener it came in on and which route its path names. One
//! list of routes, so routing, the metrics' labels and their counters cannot disagree.

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `-api`: reads and writes.
    Api,
    /// `-http`: the page and read-only JSON. Never a write.
    Ui,
}

impl Listener {
    /// Every listener, in the order of [`Listener::index`].
    pub const ALL: [Listener; 2] = [Listener::Api, Listener::Ui];

    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Ui => "ui",
        }
    }

    /// The listener's place in [`Listener::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The routes the registry answers, and `Other` for every path it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Page,
    Healthz,
    Endpoints,
    /// `/endpoints/NAME`, whatever the Name.
    OneEndpoint,
    Register,
    Deregister,
    Metrics,
    ServiceDiscovery,
    Other,
}

impl Route {
    /// Every route, in the order of [`Route::index`].
    pub const ALL: [Route; 9] = [
        Route::Page,
        Route::Healthz,
        Route::Endpoints,
        Route::OneEndpoint,
        Route::Register,
        Route::Deregister,
        Route::Metrics,
        Route::ServiceDiscovery,
        Route::Other,
    ];

    /// The route a path (without its query) names.
    pub fn of(path: &str) -> Route {
        match path {
            "/" => Route::Page,
            "/healthz" => Route::Healthz,
            "/endpoints" => Route::Endpoints,
            "/register" => Route::Register,
            "/deregister" => Route::Deregister,
            "/metrics" => Route::Metrics,
            "/v1/sd" => Route::ServiceDiscovery,
            p if p.starts_with("/endpoints/") => Route::OneEndpoint,
            _ => Route::Other,
        }
    }

    /// The label in metrics: a fixed set, whatever paths clients send.
    pub fn label(self) -> &'static str {
        match self {
            Route::Page => "/",
            Route::Healthz => "/healthz",
            Route::Endpoints => "/endpoints",
            Route::OneEndpoint => "/endpoints/NAME",
            Route::Register => "/register",
            Route::Deregister => "/deregister",
            Route::Metrics => "/metrics",
            Route::ServiceDiscovery => "/v1/sd",
            Route::Other => "other",
        }
    }

    /// The route's place in [`Route::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_found_by_its_own_label_and_indexes_its_place() {
        for (i, route) in Route::ALL.into_iter().enumerate() {
            assert_eq!(route.index(), i);
            let path = if route == Route::OneEndpoint { "/endpoints/web-1" } else { route.label() };
            let expected = if route == Route::Other { Route::Other } else { route };
            assert_eq!(Route::of(path), expected, "{path}");
        }
        assert_eq!(Route::of("/nope"), Route::Other);
        assert_eq!(Route::of("/endpoints/"), Route::OneEndpoint);
        for (i, listener) in Listener::ALL.into_iter().enumerate() {
            assert_eq!(listener.index(), i);
        }
    }
}
