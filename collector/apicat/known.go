package apicat

// Known is the embedded table of public APIs, as Metrist's catalogue names them: the first pattern that
// matches a host names its service. The user's entries (api_services) come before it.
var Known = []Service{
	{"api.stripe.com", "stripe"}, {"files.stripe.com", "stripe"}, {"connect.stripe.com", "stripe"},
	{"api.github.com", "github"}, {"uploads.github.com", "github"}, {"github.com", "github"},
	{"slack.com", "slack"}, {"*.slack.com", "slack"},
	{"s3.amazonaws.com", "awss3"}, {"*.s3.amazonaws.com", "awss3"}, {"s3.*.amazonaws.com", "awss3"}, {"*.s3.*.amazonaws.com", "awss3"},
	{"dynamodb.*.amazonaws.com", "awsdynamodb"}, {"sqs.*.amazonaws.com", "awssqs"}, {"lambda.*.amazonaws.com", "awslambda"},
	{"*.amazonaws.com", "aws"},
	{"storage.googleapis.com", "gcs"}, {"*.storage.googleapis.com", "gcs"},
	{"bigquery.googleapis.com", "gcpbigquery"}, {"pubsub.googleapis.com", "gcppubsub"}, {"*.googleapis.com", "gcp"},
	{"*.blob.core.windows.net", "azureblob"}, {"*.queue.core.windows.net", "azurequeue"}, {"management.azure.com", "azure"},
	{"api.openai.com", "openai"}, {"api.anthropic.com", "anthropic"},
	{"api.twilio.com", "twilio"}, {"*.twilio.com", "twilio"},
	{"api.sendgrid.com", "sendgrid"}, {"api.mailgun.net", "mailgun"},
	{"api.pagerduty.com", "pagerduty"}, {"events.pagerduty.com", "pagerduty"},
	{"*.atlassian.net", "jira"}, {"api.zoom.us", "zoom"}, {"graph.microsoft.com", "msgraph"},
	{"api.hubapi.com", "hubspot"}, {"*.my.salesforce.com", "salesforce"}, {"api.shopify.com", "shopify"}, {"*.myshopify.com", "shopify"},
	{"api.datadoghq.com", "datadog"}, {"api.cloudflare.com", "cloudflare"}, {"api.braintreegateway.com", "braintree"},
	{"api.paypal.com", "paypal"}, {"api-m.paypal.com", "paypal"}, {"api.square.com", "square"},
	{"api.segment.io", "segment"}, {"api.mixpanel.com", "mixpanel"}, {"*.auth0.com", "auth0"}, {"*.okta.com", "okta"},
	{"api.fastly.com", "fastly"}, {"api.heroku.com", "heroku"}, {"api.digitalocean.com", "digitalocean"},
}
