mod manifest;
mod plan;
