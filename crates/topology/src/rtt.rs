//! Round-trip times: the moving average and the minimum of recent samples.
