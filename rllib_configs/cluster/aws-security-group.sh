#!/bin/sh
# Creates the security group for aws-gpu.yaml and prints its ID (put it in the YAML's
# SecurityGroupIds). It admits traffic between members of the group (the cluster's own
# nodes: Ray's ports) and SSH from SSH_CIDR; nothing else. Ray's default group would also
# admit SSH from anywhere, and the dashboard listens on the head's loopback only.
#   SSH_CIDR=203.0.113.7/32 rllib_configs/cluster/aws-security-group.sh
# Optional: REGION (us-west-2, as in aws-gpu.yaml), VPC_ID (the region's default VPC),
# GROUP_NAME (ganno-gpu). Needs the AWS CLI with the credentials `ray up` uses.
set -eu
: "${SSH_CIDR:?set SSH_CIDR to the addresses allowed to SSH in, e.g. SSH_CIDR=203.0.113.7/32}"
REGION="${REGION:-us-west-2}"
GROUP_NAME="${GROUP_NAME:-ganno-gpu}"
if [ -z "${VPC_ID:-}" ]; then
  VPC_ID=$(aws ec2 describe-vpcs --region "$REGION" --filters Name=is-default,Values=true \
    --query 'Vpcs[0].VpcId' --output text)
fi
GROUP_ID=$(aws ec2 create-security-group --region "$REGION" --vpc-id "$VPC_ID" \
  --group-name "$GROUP_NAME" --description "ganno Ray cluster: own nodes, SSH from $SSH_CIDR" \
  --query GroupId --output text)
aws ec2 authorize-security-group-ingress --region "$REGION" --group-id "$GROUP_ID" \
  --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$GROUP_ID}]" \
  "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=$SSH_CIDR}]" >/dev/null
echo "$GROUP_ID"
