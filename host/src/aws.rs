//! How the host's AWS clients are set up, one rule for all of them:
//! credentials and region from the standard chain; an endpoint override
//! (the config, else `AWS_ENDPOINT_URL_<SERVICE>`) for a stand-in, which then
//! gets `us-east-1` unless a region is set somewhere, and dummy credentials
//! unless the environment has some (stand-ins accept any, and looking for an
//! instance role off EC2 costs a timeout and a warning).

/// The shared SDK settings, and the endpoint override in force.
pub(crate) struct Loaded {
    pub(crate) config: aws_config::SdkConfig,
    pub(crate) endpoint: Option<String>,
}

pub(crate) async fn load(
    region: Option<&str>,
    endpoint: Option<&str>,
    endpoint_var: &str,
    timeouts: Option<aws_config::timeout::TimeoutConfig>,
) -> Loaded {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(t) = timeouts {
        loader = loader.timeout_config(t);
    }
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    let endpoint = endpoint
        .map(str::to_owned)
        .or_else(|| std::env::var(endpoint_var).ok())
        .filter(|e| !e.is_empty());
    if let Some(url) = &endpoint {
        loader = loader.endpoint_url(url);
        if region.is_none()
            && ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"]
                .iter()
                .all(|v| std::env::var_os(v).is_none())
        {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && std::env::var_os("AWS_PROFILE").is_none()
        {
            loader = loader.test_credentials();
        }
    }
    let mut config = loader.load().await;
    if config.region().is_none() {
        config = config
            .to_builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
    }
    Loaded { config, endpoint }
}
