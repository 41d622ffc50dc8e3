package cloudformation_test

import (
	"encoding/json"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// deployerActions lists, per resource type the templates use, the IAM
// actions CloudFormation calls with the deploying person's credentials to
// create, update, read and delete it (the resource schemas' handler
// permissions, trimmed to what these templates set). A type missing here
// fails TestDeployerPolicy: add its actions here and to deployer-policy.json.
var deployerActions = map[string][]string{
	"AWS::CloudFormation::Stack": {"cloudformation:CreateStack", "cloudformation:UpdateStack", "cloudformation:DeleteStack",
		"cloudformation:DescribeStacks", "s3:GetObject"}, // s3: the packaged TemplateURL
	"AWS::CloudFormation::WaitConditionHandle": {},
	"AWS::EC2::VPC":          {"ec2:CreateVpc", "ec2:DeleteVpc", "ec2:ModifyVpcAttribute", "ec2:DescribeVpcs", "ec2:DescribeVpcAttribute", "ec2:CreateTags"},
	"AWS::EC2::VPCCidrBlock": {"ec2:AssociateVpcCidrBlock", "ec2:DisassociateVpcCidrBlock", "ec2:DescribeVpcs"},
	"AWS::EC2::Subnet": {"ec2:CreateSubnet", "ec2:DeleteSubnet", "ec2:ModifySubnetAttribute", "ec2:AssociateSubnetCidrBlock",
		"ec2:DisassociateSubnetCidrBlock", "ec2:DescribeSubnets", "ec2:CreateTags"},
	"AWS::EC2::InternetGateway":             {"ec2:CreateInternetGateway", "ec2:DeleteInternetGateway", "ec2:DescribeInternetGateways", "ec2:CreateTags"},
	"AWS::EC2::VPCGatewayAttachment":        {"ec2:AttachInternetGateway", "ec2:DetachInternetGateway", "ec2:DescribeInternetGateways"},
	"AWS::EC2::RouteTable":                  {"ec2:CreateRouteTable", "ec2:DeleteRouteTable", "ec2:DescribeRouteTables", "ec2:CreateTags"},
	"AWS::EC2::Route":                       {"ec2:CreateRoute", "ec2:DeleteRoute", "ec2:ReplaceRoute", "ec2:DescribeRouteTables"},
	"AWS::EC2::SubnetRouteTableAssociation": {"ec2:AssociateRouteTable", "ec2:DisassociateRouteTable", "ec2:DescribeRouteTables"},
	"AWS::EC2::EIP":                         {"ec2:AllocateAddress", "ec2:ReleaseAddress", "ec2:DescribeAddresses", "ec2:CreateTags"},
	"AWS::EC2::NatGateway":                  {"ec2:CreateNatGateway", "ec2:DeleteNatGateway", "ec2:DescribeNatGateways", "ec2:CreateTags"},
	"AWS::EC2::VPCEndpoint":                 {"ec2:CreateVpcEndpoint", "ec2:DeleteVpcEndpoints", "ec2:ModifyVpcEndpoint", "ec2:DescribeVpcEndpoints"},
	"AWS::EC2::SecurityGroup": {"ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
		"ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
		"ec2:DescribeSecurityGroups", "ec2:CreateTags"},
	"AWS::EC2::LaunchTemplate": {"ec2:CreateLaunchTemplate", "ec2:CreateLaunchTemplateVersion", "ec2:DeleteLaunchTemplate",
		"ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions", "iam:PassRole"}, // PassRole: the instance profile
	"AWS::AutoScaling::AutoScalingGroup": {"autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup",
		"autoscaling:DeleteAutoScalingGroup", "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeScalingActivities",
		"autoscaling:CreateOrUpdateTags", "ec2:RunInstances", "ec2:CreateTags", "iam:PassRole", "iam:CreateServiceLinkedRole"},
	"AWS::ElasticLoadBalancingV2::LoadBalancer": {"elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:DeleteLoadBalancer",
		"elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetSecurityGroups",
		"elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
		"elasticloadbalancing:AddTags", "iam:CreateServiceLinkedRole"},
	"AWS::ElasticLoadBalancingV2::TargetGroup": {"elasticloadbalancing:CreateTargetGroup", "elasticloadbalancing:DeleteTargetGroup",
		"elasticloadbalancing:ModifyTargetGroup", "elasticloadbalancing:ModifyTargetGroupAttributes",
		"elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes"},
	"AWS::ElasticLoadBalancingV2::Listener": {"elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener",
		"elasticloadbalancing:ModifyListener", "elasticloadbalancing:DescribeListeners"},
	"AWS::GlobalAccelerator::Accelerator": {"globalaccelerator:CreateAccelerator", "globalaccelerator:UpdateAccelerator",
		"globalaccelerator:DeleteAccelerator", "globalaccelerator:DescribeAccelerator", "globalaccelerator:TagResource",
		"iam:CreateServiceLinkedRole"},
	"AWS::GlobalAccelerator::Listener": {"globalaccelerator:CreateListener", "globalaccelerator:UpdateListener",
		"globalaccelerator:DeleteListener", "globalaccelerator:DescribeListener"},
	"AWS::GlobalAccelerator::EndpointGroup": {"globalaccelerator:CreateEndpointGroup", "globalaccelerator:UpdateEndpointGroup",
		"globalaccelerator:DeleteEndpointGroup", "globalaccelerator:DescribeEndpointGroup",
		"elasticloadbalancing:DescribeLoadBalancers", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"},
	"AWS::IAM::Role": {"iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy",
		"iam:GetRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:ListRolePolicies",
		"iam:ListAttachedRolePolicies", "iam:TagRole"},
	"AWS::IAM::InstanceProfile": {"iam:CreateInstanceProfile", "iam:DeleteInstanceProfile", "iam:GetInstanceProfile",
		"iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:PassRole"},
	"AWS::IAM::ServiceLinkedRole": {"iam:CreateServiceLinkedRole", "iam:DeleteServiceLinkedRole", "iam:GetServiceLinkedRoleDeletionStatus"},
	"AWS::MSK::Cluster": {"kafka:CreateCluster", "kafka:DeleteCluster", "kafka:DescribeCluster", "kafka:UpdateSecurity",
		"kafka:TagResource", "kafka:ListTagsForResource", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeVpcs",
		"iam:CreateServiceLinkedRole"},
	"AWS::MSK::ServerlessCluster": {"kafka:CreateClusterV2", "kafka:DeleteCluster", "kafka:DescribeClusterV2",
		"kafka:TagResource", "ec2:CreateVpcEndpoint", "ec2:DeleteVpcEndpoints", "ec2:DescribeVpcEndpoints",
		"ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeVpcs", "ec2:CreateTags"},
	"AWS::OpenSearchService::Domain": {"es:CreateDomain", "es:DeleteDomain", "es:UpdateDomainConfig", "es:DescribeDomain",
		"es:DescribeDomainConfig", "es:AddTags", "es:ListTags", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
		"ec2:DescribeVpcs"},
	"AWS::SecretsManager::Secret": {"secretsmanager:CreateSecret", "secretsmanager:DeleteSecret", "secretsmanager:DescribeSecret",
		"secretsmanager:UpdateSecret", "secretsmanager:GetRandomPassword", "secretsmanager:TagResource"},
}

// parameterActions: CloudFormation checks AWS-specific parameter types and
// resolves SSM parameters with the caller's credentials.
var parameterActions = map[string][]string{
	"AWS::EC2::VPC::Id":           {"ec2:DescribeVpcs"},
	"AWS::EC2::Subnet::Id":        {"ec2:DescribeSubnets"},
	"AWS::EC2::SecurityGroup::Id": {"ec2:DescribeSecurityGroups"},
	"AWS::EC2::Image::Id":         {"ec2:DescribeImages"},
	"AWS::SSM::Parameter::Value":  {"ssm:GetParameters"},
}

// iamPolicy is the part of an IAM policy document the check reads.
type iamPolicy struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Action    stringList
		Resource  stringList
		Condition map[string]map[string]stringList
	}
}

// stringList is an IAM "one string or a list of strings".
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	err := json.Unmarshal(b, &many)
	*s = many
	return err
}

// allowed returns the policy's allowed action patterns.
func (p iamPolicy) allowed() []string {
	var out []string
	for _, st := range p.Statement {
		if st.Effect == "Allow" {
			out = append(out, st.Action...)
		}
	}
	return out
}

// actionAllowed matches an action against IAM action patterns ("*" and "?"
// wildcards, case-insensitive, as IAM does).
func actionAllowed(patterns []string, action string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(action)); ok {
			return true
		}
	}
	return false
}

func loadDeployerPolicy(t *testing.T) iamPolicy {
	t.Helper()
	data, err := os.ReadFile("deployer-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	var p iamPolicy
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("deployer-policy.json: %v", err)
	}
	if p.Version != "2012-10-17" {
		t.Errorf("deployer-policy.json: Version %q, want 2012-10-17 (older versions do not support policy variables)", p.Version)
	}
	for _, st := range p.Statement {
		if len(st.Resource) == 0 {
			t.Errorf("statement %s has no Resource", st.Sid)
		}
		for _, a := range st.Action {
			if a == "*" || strings.HasSuffix(a, ":*") {
				t.Errorf("statement %s allows %q: list the actions", st.Sid, a)
			}
		}
	}
	return p
}

// requiredDeployerActions returns what deploying the templates needs, by
// the resource and parameter types they use and the secrets they resolve,
// with the type that needs each action.
func requiredDeployerActions(t *testing.T) map[string][]string {
	t.Helper()
	need := map[string][]string{} // action -> types
	add := func(typ string, acts []string) {
		for _, a := range acts {
			if !slices.Contains(need[a], typ) {
				need[a] = append(need[a], typ)
			}
		}
	}
	paramTypeRE := regexp.MustCompile(`^(?:List<)?(AWS::[A-Za-z0-9:]+?)(?:<.*>)?>?$`)
	for _, f := range templateFiles {
		tp := load(t, f)
		for name, r := range tp.section("Resources") {
			typ, _ := dig(r, "Type").(string)
			acts, ok := deployerActions[typ]
			if !ok {
				t.Errorf("%s: resource %s has type %s, which deployerActions does not list: add the actions CloudFormation needs for it here and to deployer-policy.json", f, name, typ)
				continue
			}
			add(typ, acts)
		}
		for name, p := range tp.section("Parameters") {
			typ, _ := dig(p, "Type").(string)
			m := paramTypeRE.FindStringSubmatch(typ)
			if m == nil {
				continue // String, Number, CommaDelimitedList
			}
			acts, ok := parameterActions[m[1]]
			if !ok {
				t.Errorf("%s: parameter %s has type %s, which parameterActions does not list", f, name, typ)
				continue
			}
			add(typ, acts)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "{{resolve:secretsmanager:") {
			add(f+" {{resolve:secretsmanager}}", []string{"secretsmanager:GetSecretValue"})
		}
	}
	return need
}

// TestDeployerPolicy checks deploy/cloudformation/deployer-policy.json, the
// IAM policy the deploying person needs, against the templates: every
// resource type, parameter type and dynamic reference they use has its
// actions in the policy.
func TestDeployerPolicy(t *testing.T) {
	p := loadDeployerPolicy(t)
	allowed := p.allowed()
	need := requiredDeployerActions(t)
	if len(need) < 50 {
		t.Fatalf("only %d required actions found; the template walk is broken", len(need))
	}
	var missing []string
	for a, types := range need {
		if !actionAllowed(allowed, a) {
			missing = append(missing, a+" (for "+strings.Join(types, ", ")+")")
		}
	}
	slices.Sort(missing)
	for _, m := range missing {
		t.Errorf("deployer-policy.json does not allow %s", m)
	}
}

// awsCommandRE finds `aws SERVICE COMMAND` in a shell line.
var awsCommandRE = regexp.MustCompile(`(?:^|[\s(;|&$])aws\s+([a-z0-9-]+)\s+([a-z0-9-]+)`)

// guideActions maps an `aws` CLI call to the IAM actions it needs: the
// command's name in PascalCase under the service's prefix, except for the
// CLI's own composite commands.
func guideActions(service, command string) []string {
	switch service + " " + command {
	case "sts get-caller-identity":
		return nil // needs no permission
	case "s3 mb":
		return []string{"s3:CreateBucket"}
	case "s3 cp":
		return []string{"s3:PutObject", "s3:GetObject"}
	case "s3 rm":
		return []string{"s3:ListBucket", "s3:DeleteObject"}
	case "cloudformation package":
		return []string{"s3:PutObject", "s3:ListBucket"}
	case "cloudformation deploy":
		return []string{"cloudformation:CreateChangeSet", "cloudformation:DescribeChangeSet",
			"cloudformation:ExecuteChangeSet", "cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents"}
	case "cloudformation wait":
		return []string{"cloudformation:DescribeStacks"}
	}
	prefix := map[string]string{"elbv2": "elasticloadbalancing", "opensearch": "es"}[service]
	if prefix == "" {
		prefix = service
	}
	var b strings.Builder
	for w := range strings.SplitSeq(command, "-") {
		if w != "" {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
	}
	return []string{prefix + ":" + b.String()}
}

// TestDeployerPolicyCoversGuide checks that every `aws` command of the
// deploy guide is allowed by deployer-policy.json.
func TestDeployerPolicyCoversGuide(t *testing.T) {
	p := loadDeployerPolicy(t)
	allowed := p.allowed()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for i, line := range strings.Split(string(data), "\n") {
		for _, m := range awsCommandRE.FindAllStringSubmatch(line, -1) {
			seen++
			for _, a := range guideActions(m[1], m[2]) {
				if !actionAllowed(allowed, a) {
					t.Errorf("README.md:%d: `aws %s %s` needs %s, which deployer-policy.json does not allow", i+1, m[1], m[2], a)
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("found only %d aws commands in README.md; the scan is broken", seen)
	}
}

// TestDeployerPolicyCheckFails makes sure the check can fail: a policy
// without the ec2 statement misses the VPC's actions, and the pattern
// matcher honours wildcards only where they are.
func TestDeployerPolicyCheckFails(t *testing.T) {
	if !actionAllowed([]string{"ec2:Describe*"}, "ec2:DescribeVpcs") || actionAllowed([]string{"ec2:Describe*"}, "ec2:CreateVpc") {
		t.Fatal("wildcard matching is wrong")
	}
	p := loadDeployerPolicy(t)
	var without []string
	for _, st := range p.Statement {
		if st.Sid != "Network" {
			without = append(without, st.Action...)
		}
	}
	need := requiredDeployerActions(t)
	if _, ok := need["ec2:CreateVpc"]; !ok {
		t.Fatal("ec2:CreateVpc is not required; the template walk is broken")
	}
	if actionAllowed(without, "ec2:CreateVpc") {
		t.Error("ec2:CreateVpc allowed without the Network statement")
	}
}
