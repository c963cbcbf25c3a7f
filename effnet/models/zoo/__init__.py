"""The model zoo, above the networks: model names, the one resolver (``registry``), the published weight tables,
effnet's model files, the importers of foreign state dicts, the download cache and Hugging Face Hub folders."""
