//! `official-tail URI DB COLL`: print every change event of `DB.COLL` as a line of JSON
//! (relaxed extended JSON), on the official driver. The comparison point of brook's
//! footprint: the smallest useful change-stream program (`brook tail`'s job).

use futures_util::StreamExt;
use mongodb::bson::Document;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(uri), Some(db), Some(coll)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: official-tail URI DB COLL".into());
    };
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let mut stream = client
        .database(&db)
        .collection::<Document>(&coll)
        .watch()
        .await?;
    while let Some(event) = stream.next().await {
        let event = event?;
        let doc = mongodb::bson::to_document(&event)?;
        println!(
            "{}",
            mongodb::bson::Bson::Document(doc).into_relaxed_extjson()
        );
    }
    Ok(())
}
