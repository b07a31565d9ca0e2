mod download;
mod support;
