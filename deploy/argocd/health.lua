-- Argo CD health check for TrainingPipeline and EnergyEstimation (modeltraining.kepler.io).
-- Reads what the operator writes: status.observedGeneration, the Ready condition and the
-- display phase. Installed through argocd-cm (see argocd-cm.yaml beside this file).
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
if obj.status == nil then
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    elseif (condition.type == "Stalled" or condition.type == "Degraded") and condition.status == "True" then
      return {status = "Degraded", message = condition.message or condition.reason or condition.type}
    end
  end
end

if ready == nil then
  return hs
end
local message = ready.message
if message == nil or message == "" then
  message = ready.reason or ""
end
if ready.observedGeneration ~= nil and generation ~= nil and ready.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
if ready.status == "True" then
  return {status = "Healthy", message = message}
end
if obj.status.phase == "Failed" then
  return {status = "Degraded", message = message}
end
if ready.reason == "Suspended" then
  return {status = "Suspended", message = message}
end
hs.message = message
return hs
