module bikeshare/bench/loadgen

go 1.21
