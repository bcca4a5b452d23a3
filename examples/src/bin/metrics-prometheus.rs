//! `metrics-prometheus`: brook's metrics in the Prometheus text format (see
//! [`brook_examples::metrics_prometheus`]). Uses `MONGODB_URI` when set, else a fake
//! server in this process.

#[tokio::main]
async fn main() -> Result<(), brook_examples::metrics_prometheus::BoxError> {
    let text = brook_examples::metrics_prometheus::run(std::env::var("MONGODB_URI").ok()).await?;
    print!("{text}");
    Ok(())
}
