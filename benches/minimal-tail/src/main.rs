//! `brook-minimal-tail URI DB COLL`: print every change event of `DB.COLL` as a line of
//! relaxed extended JSON, on brook with its default features. It does what
//! `benches/compare/tail` (`official-tail`) does on the official driver, so that the two
//! dependency trees, build times and binaries compare like for like.

use bson::{Bson, Document};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(uri), Some(db), Some(coll)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: brook-minimal-tail URI DB COLL".into());
    };
    let client = brook::Client::connect(&uri).await?;
    let mut stream = client
        .database(&db)
        .collection::<Document>(&coll)
        .watch()
        .raw()
        .await?;
    while let Some(event) = stream.next().await {
        let doc = event?.to_document()?;
        println!("{}", Bson::Document(doc).into_relaxed_extjson());
    }
    Ok(())
}
