//go:build tools

// Package main pins the project's module dependencies until code imports them all.
package main

import (
	_ "github.com/HdrHistogram/hdrhistogram-go"
	_ "github.com/aws/aws-sdk-go-v2/config"
	_ "github.com/aws/aws-sdk-go-v2/service/kafka"
	_ "github.com/google/uuid"
	_ "github.com/maxmind/mmdbwriter"
	_ "github.com/opensearch-project/opensearch-go/v4"
	_ "github.com/opensearch-project/opensearch-go/v4/opensearchapi"
	_ "github.com/opensearch-project/opensearch-go/v4/signer/awsv2"
	_ "github.com/oschwald/geoip2-golang/v2"
	_ "github.com/pires/go-proxyproto"
	_ "github.com/pires/go-proxyproto/tlvparse"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/segmentio/kafka-go"
	_ "github.com/segmentio/kafka-go/compress/zstd"
	_ "github.com/segmentio/kafka-go/sasl/aws_msk_iam_v2"
	_ "github.com/segmentio/kafka-go/sasl/scram"
	_ "github.com/twmb/franz-go/pkg/kfake"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/sync/errgroup"
)

func main() {}
