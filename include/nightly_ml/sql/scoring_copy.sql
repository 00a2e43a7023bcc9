COPY {predictions} ({columns}) FROM STDIN WITH (FORMAT csv)
